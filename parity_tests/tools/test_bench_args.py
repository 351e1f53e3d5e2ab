"""``python -m bench``: arguments and output it cannot use are refused before the run, in one line."""
import pytest

from bench import run


def test_an_unwritable_out_is_refused_before_the_run(tmp_path, capsys):
    (tmp_path / 'afile').write_text('')
    with pytest.raises(SystemExit) as e:
        run.main(['--models', 'tnt_tiny_patch16_64', '--batches', '1', '--tasks', 'infer', '--variants', 'ms-graph',
                  '--out', str(tmp_path / 'afile' / 'results')])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == '' and err.strip().splitlines()[-1] == \
        f"python -m bench: error: --out {tmp_path / 'afile' / 'results'}: {tmp_path / 'afile'} is not a folder"


def test_an_unknown_model_argument_is_refused_before_the_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run.main(['--models', 'tnt_tiny_patch16_64,ptnt_tiny_patch16_64', '--batches', '1', '--tasks', 'infer',
                  '--ms-arg', 'impl=standard', '--ms-arg', 'embed_dims=8', '--out', str(tmp_path / 'results')])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == '' and err.strip().splitlines()[-1] == \
        'python -m bench: error: --ms-arg embed_dims: not an argument of tnt_tiny_patch16_64'
    assert list(tmp_path.iterdir()) == []
