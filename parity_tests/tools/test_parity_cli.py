"""``tnt-parity``: table, JSON, Markdown and PNG; exit status 0 PASS, 1 FAIL, 2 bad input."""
import json

import numpy as np
import pytest
from PIL import Image

from parity import cli, precision

NAME = 'tnt_tiny_patch16_64'


def run(tmp_path, *extra):
    out = tmp_path / 'report'
    code = cli.main(['--model', NAME, '--mode', 'pynative', '--output-dir', str(out), *extra])
    return code, out


def test_report_files(tmp_path, capsys):
    code, out = run(tmp_path)
    text = capsys.readouterr().out
    assert code == 0, text
    assert 'inner max|d|' in text and 'outer max|d|' in text and 'block 3' in text and text.rstrip().endswith(
        'parity_tnt_tiny_patch16_64_pynative_fp32.png') and '\nPASS\n' in text
    stem = out / 'parity_tnt_tiny_patch16_64_pynative_fp32'
    report = json.loads(stem.with_suffix('.json').read_text())
    assert report['passed'] and report['variant'] == NAME
    assert len(report['forward']['rows']) == 2 * (4 + 1)
    assert len(report['gradients']['rows']) == 131
    md = stem.with_suffix('.md').read_text()
    assert '| block 3 |' in md and '**PASS**' in md
    img = np.asarray(Image.open(stem.with_suffix('.png')).convert('L'))
    assert img.shape[0] > 300 and img.shape[1] > 500 and img.std() > 10  # a real picture, not blank
    assert sorted(p.name for p in out.iterdir()) == sorted(stem.name + e for e in ('.json', '.md', '.png'))


def test_amp_dtype(tmp_path, capsys):
    code, out = run(tmp_path, '--amp', 'O2', '--batch-size', '3')
    assert code == 0, capsys.readouterr().out
    report = json.loads((out / 'parity_tnt_tiny_patch16_64_pynative_amp.json').read_text())
    assert report['amp_level'] == 'O2' and report['batch'] == 3


def test_fail_exits_nonzero(tmp_path, capsys, monkeypatch):
    # bounds no fp32 run can meet: the verdict and the exit status must say FAIL
    monkeypatch.setitem(precision.BOUNDS, 'O0', dict(precision.BOUNDS['O0'], stage_rel=1e-12))
    code, out = run(tmp_path)
    text = capsys.readouterr().out
    assert code == 1 and '\nFAIL\n' in text and 'forward stages' in text and ': FAIL' in text
    assert not json.loads((out / 'parity_tnt_tiny_patch16_64_pynative_fp32.json').read_text())['passed']


def test_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run(tmp_path, '--checkpoint', str(tmp_path / 'weights.pth'))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('tnt-parity: error:') and 'weights.pth: no such file' in err[0]
    assert not (tmp_path / 'report').exists()


def test_unreadable_checkpoint(tmp_path, capsys):
    path = tmp_path / 'weights.pth'
    path.write_bytes(b'not a checkpoint' * 10)
    code, out = run(tmp_path, '--checkpoint', str(path))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith('tnt-parity: error:') and 'weights.pth' in err[0]
    assert not out.exists()


def test_readme_invocation_parses():
    args = cli.parse_args(['--model', 'tnt_s_patch16_224'])
    assert (args.model, args.mode, args.amp, args.batch_size) == ('tnt_s_patch16_224', 'graph', 'O0', 2)
    assert cli.parse_args([]).model == 'tnt_s_patch16_224'


def test_checkpoint_file(tmp_path, capsys):
    import torch
    from parity.forward import random_models
    torch_model, _ = random_models(NAME, seed=3)
    path = tmp_path / 'tiny.pth'
    torch.save({'state_dict': torch_model.state_dict()}, path)
    out = tmp_path / 'report'
    code = cli.main(['--checkpoint', str(path), '--mode', 'pynative', '--output-dir', str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert f'({path})' in text.splitlines()[0]
    assert json.loads((out / 'parity_tnt_tiny_patch16_64_pynative_fp32.json').read_text())['checkpoint'] == str(path)


def test_checkpoint_positional_or_flag(tmp_path):
    """The weights file is positional, as in every other command; the flag stays."""
    f = tmp_path / 'w.pth'
    f.write_bytes(b'x')
    assert cli.parse_args([str(f)]).checkpoint == cli.parse_args(['--checkpoint', str(f)]).checkpoint == str(f)


def test_checkpoint_given_twice_is_refused(tmp_path, capsys):
    f = tmp_path / 'w.pth'
    f.write_bytes(b'x')
    with pytest.raises(SystemExit) as e:
        cli.parse_args([str(f), '--checkpoint', str(tmp_path / 'other.pth')])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f'tnt-parity: error: give the checkpoint once: CHECKPOINT {f} or --checkpoint {tmp_path / "other.pth"}'


def test_an_output_dir_that_cannot_be_made_is_refused_before_the_run(tmp_path, capsys):
    (tmp_path / 'afile').write_text('')
    with pytest.raises(SystemExit) as e:
        cli.parse_args(['--model', NAME, '--output-dir', str(tmp_path / 'afile' / 'report')])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"tnt-parity: error: --output-dir {tmp_path / 'afile' / 'report'}: {tmp_path / 'afile'} is not a folder"


def test_report_files_are_written_all_or_none(tmp_path, capsys):
    """One of the three cannot be written (a folder holds its name): one line, exit 2, and neither of the others."""
    png = tmp_path / 'report' / 'parity_tnt_tiny_patch16_64_pynative_fp32.png'
    png.mkdir(parents=True)
    code, out = run(tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and err == f'tnt-parity: error: --output-dir {out}: {png}: Is a directory\n', err
    assert [p.name for p in out.iterdir()] == [png.name]


def test_pyramid_amp_is_refused(tmp_path, capsys):
    code, out = cli.main(['--model', 'ptnt_tiny_patch16_64', '--amp', 'O2', '--mode', 'pynative',
                          '--output-dir', str(tmp_path / 'report')]), tmp_path / 'report'
    err = capsys.readouterr().err
    assert code == 2 and err == ('tnt-parity: error: ptnt_tiny_patch16_64: mixed precision is not done for '
                                 'PyramidTNT yet (docs/ptnt.md); compare it in fp32\n'), err
    assert not out.exists()


@pytest.mark.parametrize('seed', ['-3', str(2 ** 32)])
def test_a_seed_out_of_range_is_refused_naming_it(tmp_path, capsys, seed):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(['--model', NAME, '--seed', seed, '--output-dir', str(tmp_path / 'report')])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f'tnt-parity: error: --seed must be from 0 to 2**32 - 1, got {seed}'
