"""PyramidTNT conversion: official PyTorch files <-> mindspore_tnt.ptnt, verified, strict.

Official-layout files are torch_ref PyramidTNT state dicts holding random weights with
non-trivial BatchNorm statistics (``random_pyramid_weights``), saved plain or wrapped as the
official ``train.py`` and timm save them. Converted files load strictly into the other
framework's model, and both models agree at the stem, every block and every merge within
``FP32_BOUND``. Variant detection runs on zero-stride arrays of every variant's shapes.
Planted converter faults (a BatchNorm's mean and variance swapped, a square weight
transposed) fail verification at the stage they touch; bad inputs are refused in one line
with no output left behind.
"""
import os

import mindspore as ms
import numpy as np
import pytest
import torch

import convert
from convert import files, pyramid, verify
from convert.cli import main
from convert.errors import ConversionError
from convert.layouts import pyramid_shapes
from mindspore_tnt.outputs import mindspore_outputs
from mindspore_tnt.ptnt import create_model as create_mindspore
from parity.forward import set_mode
from parity_tests.helpers import assert_refused, snapshot
from parity_tests.helpers import random_state, tensors
from tnt_common.compare import FP32_BOUND, compare_outputs, describe_failure
from tnt_common.fixtures import make_batch, random_pyramid_weights
from tnt_common.numerics import PYTORCH
from tnt_common.pyramid import stage_names
from tnt_common.variants import PYRAMID_VARIANTS, list_models
from torch_ref.outputs import torch_outputs
from torch_ref.ptnt import create_model as create_torch

TINY = 'ptnt_tiny_patch16_64'
NAMES = stage_names(PYRAMID_VARIANTS[TINY]['depths'])
BN = 'patch_embed.outer_convs.4'


@pytest.fixture(scope='module')
def source():
    """(official state dict as numpy, torch model holding it, its outputs on a batch of 2)."""
    set_mode('pynative')
    model = create_torch(TINY)
    state = random_pyramid_weights({k: v.shape for k, v in model.state_dict().items()})
    state = {k: np.full((), 7, np.int64) if k.endswith('num_batches_tracked') else v for k, v in state.items()}
    model.load_state_dict(state_dict(state), strict=True)
    x = make_batch(2, PYRAMID_VARIANTS[TINY]['img_size'])
    return state, model, x, torch_outputs(model, x)


def state_dict(arrays):
    """Torch tensors of numpy ``arrays``, 0-d counters kept 0-d (as ``BatchNorm2d`` saves them)."""
    return {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}


def save(state, path, wrap=None):
    torch.save(state_dict(state) if wrap is None else wrap(state_dict(state)), path)
    return path


def assert_parity(net, source):
    _, _, x, ref = source
    report = compare_outputs(mindspore_outputs(net, x), ref, names=NAMES)
    assert report['passed'], describe_failure(report)
    assert [r['stage'] for r in report['rows'][::2]] == NAMES


def load_ckpt_strictly(path):
    net = create_mindspore(TINY)
    not_loaded, unused = ms.load_param_into_net(net, ms.load_checkpoint(str(path)), strict_load=True)
    assert not not_loaded and unused == ['tnt_numerics'], (not_loaded, unused)
    return net


# --- shapes and detection ---

@pytest.mark.parametrize('name', list_models('ptnt'))
def test_shape_table_is_the_models_state_dict(name):
    with torch.device('meta'):
        model = create_torch(name)
    assert pyramid_shapes(name) == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_mindspore_shape_table_is_the_nets_parameters():
    net = create_mindspore(TINY, num_classes=10)
    assert pyramid_shapes(TINY, 10, mindspore=True) == {p.name: tuple(p.shape) for p in net.get_parameters()}


@pytest.mark.parametrize('mindspore', [False, True])
@pytest.mark.parametrize('name', list_models('ptnt'))
def test_variant_detected_from_shapes(name, mindspore):
    for nc in (1000, 10, 0):
        arrays = {k: np.broadcast_to(np.float32(0), s) for k, s in pyramid_shapes(name, nc, mindspore=mindspore).items()}
        assert pyramid.is_pyramid(arrays)
        can = pyramid.to_canonical(arrays)
        assert (can.variant, can.num_classes, can.img_size) == (name, nc, PYRAMID_VARIANTS[name]['img_size'])
        assert can.layout == ('mindspore' if mindspore else 'official')
        assert set(can.arrays) == {k for k in pyramid_shapes(name, nc) if not k.endswith('num_batches_tracked')}


def test_tnt_is_not_pyramid():
    assert not pyramid.is_pyramid(random_state())


# --- conversion, both directions ---

def test_cli_torch_to_mindspore_and_back(source, tmp_path):
    state, _, _, _ = source
    src = save(state, tmp_path / 'ptnt_tiny.pth.tar', wrap=lambda s: {'state_dict': s, 'epoch': 300})
    out = main(['--no-progress', str(src), str(tmp_path / 'ptnt.ckpt')])
    assert out == 0
    assert_parity(load_ckpt_strictly(tmp_path / 'ptnt.ckpt'), source)
    assert main(['--no-progress', str(tmp_path / 'ptnt.ckpt'), str(tmp_path / 'back.pth')]) == 0
    back = torch.load(tmp_path / 'back.pth', weights_only=True)
    create_torch(TINY).load_state_dict(back, strict=True)
    assert set(back) == set(state)
    for k, v in state.items():
        if k.endswith('num_batches_tracked'):  # restored as 0, documented; the forward pass never reads it
            assert back[k].dtype == torch.int64 and back[k].shape == () and back[k].item() == 0
        else:
            assert np.array_equal(back[k].numpy(), v), k


@pytest.mark.parametrize('wrap, dtype', [('plain', 'fp32'), ('model', 'bf16'), ('module', 'fp16')])
def test_wrappers_safetensors_and_dtypes(source, tmp_path, wrap, dtype):
    state = source[0]
    wraps = {'plain': None, 'model': lambda s: {'model': s, 'optimizer': {}},
             'module': lambda s: {'module.' + k: v for k, v in s.items()}}
    src = save(state, tmp_path / 'in.pth', wraps[wrap])
    report = convert.convert_file(src, tmp_path / 'out.safetensors', to='mindspore', dtype=dtype)
    assert report['variant'] == TINY and report['verification']['passed']
    assert report['tensors'] == len(state) - 5  # five BatchNorms, no counters in MindSpore
    net = create_mindspore(TINY)
    params = ms.load_checkpoint(str(tmp_path / 'out.safetensors'), format='safetensors')
    params = {k: ms.Parameter(v.astype(ms.float32), name=k) for k, v in params.items()}
    assert ms.load_param_into_net(net, params, strict_load=True) == ([], [])


def test_api_both_directions(source, tmp_path):
    state, model, _, _ = source
    src = save(state, tmp_path / 'in.pth')
    net = convert.load_torch_into_mindspore(src)
    assert_parity(net, source)
    ms.save_checkpoint(net, str(tmp_path / 'net.ckpt'))
    created = convert.api.create_model('mindspore', TINY + '.untrained', checkpoint_path=src)
    assert_parity(created, source)
    back = convert.load_mindspore_into_torch(tmp_path / 'net.ckpt')
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v) or k.endswith('num_batches_tracked'), k
    fine = convert.load_torch_into_mindspore(src, num_classes=10)
    assert fine.head.weight.shape == (10, 128)


# --- planted faults ---

def _swap_mean_var(arrays, layout):
    out = pyramid.from_canonical(arrays, layout)
    mean, var = f'{BN}.moving_mean', f'{BN}.moving_variance'
    out[mean], out[var] = out[var], out[mean]
    return out


def _transpose_q(arrays, layout):
    out = pyramid.from_canonical(arrays, layout)
    q = 'stages.1.blocks.2.outer_attn.q.weight'
    out[q] = np.ascontiguousarray(out[q].T)
    return out


@pytest.mark.parametrize('fault, where', [(_swap_mean_var, 'stem'), (_transpose_q, 'stage 1 block 2')])
def test_planted_fault_fails_verification(source, tmp_path, monkeypatch, fault, where):
    src = save(source[0], tmp_path / 'in.pth')
    monkeypatch.setattr(files, 'from_canonical', fault)
    with pytest.raises(ConversionError, match='verification failed'):
        convert.convert_file(src, tmp_path / 'out.ckpt')
    assert sorted(os.listdir(tmp_path)) == ['in.pth']
    # the forward comparison alone catches it too, at the stage the fault touches
    convert.convert_file(src, tmp_path / 'out.ckpt', verify=False)
    can = pyramid.to_canonical(source[0])
    report = verify.verify(str(tmp_path / 'out.ckpt'), can.arrays, 'torch', 'mindspore', 'mindspore', TINY, 1000,
                           64, PYTORCH)
    assert not report['passed'] and report['exact_mismatch']
    assert report['first_failure']['stage'] == where, report['first_failure']
    assert report['logits_rel'] > FP32_BOUND


# --- bad input ---

def _tnt_as_ptnt(tmp_path, state):
    torch.save(tensors(random_state()), tmp_path / 'tnt.pth')
    return [tmp_path / 'tnt.pth', '--model', TINY], 'is a PyramidTNT variant, the file holds no PyramidTNT'


def _ptnt_as_tnt(tmp_path, state):
    return [save(state, tmp_path / 'p.pth'), '--model', 'tnt_tiny_patch16_64'], \
        'tnt_tiny_patch16_64 is not a PyramidTNT variant'


def _truncated(tmp_path, state):
    data = save(state, tmp_path / 'p.pth').read_bytes()
    (tmp_path / 'p.pth').write_bytes(data[:len(data) // 2])
    return [tmp_path / 'p.pth'], 'not a readable torch checkpoint (truncated or corrupt'


def _missing_tensor(tmp_path, state):
    return [save({k: v for k, v in state.items() if k != f'{BN}.running_var'}, tmp_path / 'p.pth')], \
        'no registered PyramidTNT variant has these keys and shapes'


def _missing_tensor_named(tmp_path, state):
    return [save({k: v for k, v in state.items() if k != f'{BN}.running_var'}, tmp_path / 'p.pth'),
            '--model', TINY], f"missing keys ['{BN}.running_var']"


def _resize(tmp_path, state):
    return [save(state, tmp_path / 'p.pth'), '--img-size', '128'], 'keeps its input size 64'


def _tnt_layout(tmp_path, state):
    return [save(state, tmp_path / 'p.pth'), '--layout', 'mindcv'], 'the MindCV layout holds TNT only'


def _hub_config_naming_another_size(tmp_path, state):
    import json
    from safetensors.numpy import save_file
    (tmp_path / 'hub').mkdir()
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp_path / 'hub' / 'model.safetensors'))
    (tmp_path / 'hub' / 'config.json').write_text(json.dumps({'architecture': 'ptnt_s_patch16_256'}))
    return [tmp_path / 'hub'], 'config.json names ptnt_s_patch16_256; not a ptnt_s_patch16_256 checkpoint: missing keys'


def _nan(tmp_path, state):
    bad = dict(state, **{f'{BN}.running_mean': np.full_like(state[f'{BN}.running_mean'], np.nan)})
    return [save(bad, tmp_path / 'p.pth')], f'{BN}.running_mean holds'


CASES = {f.__name__[1:]: f for f in (_tnt_as_ptnt, _ptnt_as_tnt, _truncated, _missing_tensor,
                                     _missing_tensor_named, _resize, _tnt_layout, _hub_config_naming_another_size,
                                     _nan)}


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_input(source, case, tmp_path, capsys):
    args, expected = CASES[case](tmp_path, source[0])
    before = snapshot(tmp_path)
    code = main(['--no-progress', str(args[0]), str(tmp_path / 'out.ckpt'), *map(str, args[1:])])
    assert_refused(code, capsys.readouterr().err, expected, tmp_path, before)
