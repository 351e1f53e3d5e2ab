"""``python -m bench``: output that cannot be written is refused before the run, in one line."""
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
