"""``--model`` of every command takes a variant as timm names it, bare or tagged
(``tnt_s_patch16_224.in1k``), and refuses an unknown variant or tag in one line."""
import pytest

import train_ascend
from convert import cli as convert_cli
from parity import cli as parity_cli
from tnt_common.cli import EXIT_BAD_INPUT
from tnt_tools import export, predict, validate

PARSERS = {   # prog (train_ascend's is its argv[0]'s name): parse(argv) with the command's other arguments
    train_ascend.PROG: train_ascend.parse_args,
    'tnt-validate': lambda argv: validate.parse_args(['w.ckpt', 'data', *argv]),
    'tnt-predict': lambda argv: predict.parse_args(['w.ckpt', 'x.jpg', *argv]),
    'tnt-export': lambda argv: export.build_parser().parse_args(['w.ckpt', 'w.mindir', *argv]),
    'tnt-convert': lambda argv: convert_cli._parser().parse_args(['w.pth', 'w.ckpt', *argv]),
    'tnt-parity': parity_cli.parse_args,
}


@pytest.mark.parametrize('prog', list(PARSERS))
def test_model_takes_tagged_names(prog, capsys):
    parse = PARSERS[prog]
    assert parse(['--model', 'tnt_s_patch16_224.in1k']).model == 'tnt_s_patch16_224'
    assert parse(['--model', 'ptnt_tiny_patch16_64.untrained']).model == 'ptnt_tiny_patch16_64'
    assert parse(['--model', 'tnt_b_patch16_224']).model == 'tnt_b_patch16_224'
    for name, message in [('tnt_s_patch16_224.in21k', "unknown tag 'in21k' of tnt_s_patch16_224; known: "
                                                      "tnt_s_patch16_224.in1k"),
                          ('tnt_m_patch16_224', "unknown TNT variant 'tnt_m_patch16_224'; known: ptnt_b_patch16_256,")]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as refused:
            parse(['--model', name])
        err = capsys.readouterr().err
        assert refused.value.code == EXIT_BAD_INPUT and err.count('\n') == 1, err
        assert err.startswith(f'{prog}: error: argument --model: {message}'), err
