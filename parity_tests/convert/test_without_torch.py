"""tnt-convert without PyTorch (the ``torch`` extra left out, here ``torch`` made unimportable):
safetensors files, bf16 ones too, convert to MindSpore with ``--no-verify``; what needs torch
(reading or writing a torch file, the check against torch_ref) is a one-line refusal."""
import sys

import pytest
import torch
from safetensors.torch import save_file

from convert import keymap, mindspore_ckpt
from convert.cli import main
from convert.dtypes import rounded
from parity_tests.helpers import random_state, tensors


@pytest.fixture
def files(tmp_path):
    """(a bf16 safetensors file and a .pth file of one random tnt_tiny, their fp32 values)."""
    state = random_state()
    save_file({k: torch.from_numpy(v).bfloat16() for k, v in state.items()}, tmp_path / 'bf16.safetensors')
    torch.save(tensors(state), tmp_path / 'a.pth')
    return tmp_path / 'bf16.safetensors', tmp_path / 'a.pth', state


def test_safetensors_convert_without_torch(files, tmp_path, monkeypatch):
    src, _, state = files
    monkeypatch.setitem(sys.modules, 'torch', None)
    assert main(['--no-progress', '--no-verify', str(src), str(tmp_path / 'out.ckpt')]) == 0
    written = mindspore_ckpt.read(str(tmp_path / 'out.ckpt'))
    assert written.pop(keymap.NUMERICS_KEY)
    assert sorted(written) == sorted(keymap.TIMM_TO_MINDSPORE.forward(k) for k in state)
    for k, v in state.items():
        assert (written[keymap.TIMM_TO_MINDSPORE.forward(k)] == rounded(v, 'bf16')).all(), k


@pytest.mark.parametrize('case, message', [
    ('verified', 'the check against torch_ref (--no-verify skips it) needs PyTorch'),
    ('torch output', 'writing a torch file needs PyTorch'),
    ('torch input', 'a.pth: a torch file; reading it needs PyTorch'),
])
def test_what_needs_torch_is_refused(files, tmp_path, monkeypatch, capsys, case, message):
    src, pth, _ = files
    out = tmp_path / ('out.pth' if case == 'torch output' else 'out.ckpt')
    argv = {'verified': [src, out], 'torch output': ['--no-verify', '--to', 'torch', src, out], 'torch input': [pth, out]}[case]
    monkeypatch.setitem(sys.modules, 'torch', None)
    code = main(['--no-progress', *map(str, argv)])
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1 and message in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith('.')]
