"""Variants of another patch geometry, end to end: conversion, detection, loading, parity.

Two variants are registered for these tests: patch 8 with first stride 2 (4x4 words per
patch, as every listed variant has, over a finer patch grid; outer MLP ratio 2) and patch
16 with first stride 2 (8x8 = 64 words; MLP ratio 3), both at 32x32 input. Each one's
random weights, saved as a timm file, convert to MindSpore with verification on, are
detected as that variant (no other one), load back into both frameworks and match
torch_ref block by block in both MindSpore formulations ('cpu', 'standard'). Variants
with the same shapes but another patch size are ambiguous and get each its own input
size. Planted faults: a layout spec with 4x4 words or with 16-pixel patches whatever the
variant, models built without the variant's geometry, the 'cpu' gather reading each
patch's word grid transposed.
"""
import mindspore as ms
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import convert
import mindspore_tnt
import torch_ref
from convert.api import read_hub
from convert.canonical import to_timm
from convert.errors import ConversionError
from convert.layouts import timm_shapes
from mindspore_tnt.outputs import mindspore_outputs
from mindspore_tnt.tnt import IMPLS
from parity.forward import random_models, set_mode
from tnt_common import variants
from tnt_common.architecture import PIXEL_KERNEL
from tnt_common.compare import compare_outputs, describe_failure, format_rows
from tnt_common.fixtures import make_batch
from torch_ref.outputs import torch_outputs

FINE, WIDE = 'tnt_geom_patch8_32', 'tnt_geom_stride2_patch16_32'
GEOMETRIES = {
    FINE: dict(embed_dim=64, inner_dim=8, depth=2, num_heads_outer=2, num_heads_inner=2,
               patch_size=8, first_stride=2, mlp_ratio=2., legacy=False, img_size=32),
    WIDE: dict(embed_dim=48, inner_dim=4, depth=2, num_heads_outer=2, num_heads_inner=2,
               patch_size=16, first_stride=2, mlp_ratio=3., legacy=False, img_size=32),
}
WORDS = {FINE: 4 * 4, WIDE: 8 * 8}   # words per patch, counted from the geometry above
SOURCE = {FINE: 'timm.pth', WIDE: 'timm.safetensors'}
TINY = 'tnt_tiny_patch16_64'


def register(monkeypatch, name, arch):
    """``name`` in the variants table, with an untrained config (undone after the test)."""
    monkeypatch.setitem(variants.VARIANTS, name, arch)
    size = arch['img_size']
    monkeypatch.setitem(variants.PRETRAINED_CFGS, f'{name}.untrained',
                        dict(variants.PRETRAINED_CFGS[f'{TINY}.untrained'], input_size=(3, size, size)))


@pytest.fixture
def registered(monkeypatch):
    for name, arch in GEOMETRIES.items():
        register(monkeypatch, name, arch)
    set_mode('pynative')


def save_timm(model, path):
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == '.safetensors':
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def converted(name, tmp_path):
    """(torch_ref source model, the MindSpore file ``convert_file`` wrote from its timm file, report)."""
    torch_model, _ = random_models(name, seed=0)
    src = save_timm(torch_model, tmp_path / SOURCE[name])
    dst = tmp_path / 'converted.ckpt'
    report = convert.convert_file(src, dst, verify=True)
    return torch_model, dst, report


def state_arrays(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def assert_parity(out, ref, what):
    report = compare_outputs(out, ref)
    assert report['passed'], f'{what}: {describe_failure(report)}\n{format_rows(report["rows"])}'


@pytest.mark.parametrize('name', list(GEOMETRIES))
def test_converts_detects_loads_and_matches(name, registered, tmp_path):
    arch = GEOMETRIES[name]
    size, C = arch['img_size'], arch['inner_dim']
    torch_model, dst, report = converted(name, tmp_path)
    assert report['verification']['passed'], report['verification']['verdict']
    assert (report['variant'], report['img_size']) == (name, size)
    can, _ = read_hub(str(dst))
    assert (can.variant, can.img_size) == (name, size)

    back = torch_ref.create_model(name, checkpoint_path=str(dst))
    before, after = state_arrays(torch_model), state_arrays(back)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)

    x = make_batch(2, size, seed=1)
    ref = torch_outputs(torch_model, x)
    patches = (size // arch['patch_size']) ** 2
    assert ref[1][0][0].shape == (2 * patches, WORDS[name], C)
    for mode in ('pynative', 'graph'):
        set_mode(mode)
        for impl in IMPLS:
            net = mindspore_tnt.create_model(name, checkpoint_path=str(dst), impl=impl)
            assert net.pixel_embed.impl == impl
            out = mindspore_outputs(net, x)
            assert len(out[1]) == arch['depth'] + 1
            assert all(o.shape == r.shape for so, sr in zip(out[1], ref[1]) for o, r in zip(so, sr))
            assert_parity(out, ref, f'{name} [{impl}, {mode}]')


def test_same_shapes_other_patch_size_is_ambiguous_until_named(monkeypatch):
    """A twin of tnt_tiny with patch 8 / stride 2 has its 4x4 words and so its shapes: the
    file fits both, and each reads the patch grid at its own patch size."""
    twin = 'tnt_tiny_patch8_32'
    register(monkeypatch, twin, dict(variants.VARIANTS[TINY], patch_size=8, first_stride=2, img_size=32))
    arrays = {k: np.zeros(shape, np.float32) for k, shape in timm_shapes(TINY).items()}
    with pytest.raises(ConversionError, match=f'ambiguous: the shapes fit {TINY}, {twin}'):
        to_timm(dict(arrays))
    assert to_timm(dict(arrays), TINY).img_size == 64
    assert to_timm(dict(arrays), twin).img_size == 32


@pytest.mark.parametrize('name,fault', [(WIDE, 'convert.layouts.word_side'), (FINE, 'convert.layouts.input_size')])
def test_planted_fault_layout_geometry_fails_detection(name, fault, registered, monkeypatch):
    """A layout spec of 4x4 words, or of 16-pixel patches, whatever the variant's geometry."""
    arrays = state_arrays(random_models(name)[0])
    assert to_timm(dict(arrays)).variant == name
    planted = {'convert.layouts.word_side': lambda patch_size, first_stride: 4,
               'convert.layouts.input_size': lambda variant, grid: grid * 16}[fault]
    monkeypatch.setattr(fault, planted)
    with pytest.raises(ConversionError, match=f'no registered TNT variant has these keys and shapes|not a {name} '
                                              'checkpoint: '):
        to_timm(dict(arrays))


@pytest.mark.parametrize('name', list(GEOMETRIES))
def test_planted_fault_models_without_the_geometry(name, registered, tmp_path, monkeypatch):
    """``model_args`` without patch_size, first_stride and mlp_ratio: timm's defaults (16, 4, 4)
    cannot hold the converted weights."""
    _, dst, _ = converted(name, tmp_path)
    keys = tuple(k for k in variants._ARCH_KEYS if k not in ('patch_size', 'first_stride', 'mlp_ratio'))
    monkeypatch.setattr(variants, '_ARCH_KEYS', keys)
    with pytest.raises(ConversionError, match='shape'):
        mindspore_tnt.create_model(name, checkpoint_path=str(dst))


def test_planted_fault_transposed_word_grid_fails_parity(registered):
    """The 'cpu' gather with each patch's 8x8 word grid read column by column."""
    torch_model, net = random_models(WIDE, seed=0)
    embed = net.pixel_embed
    assert embed.impl == 'cpu'
    x = make_batch(2, GEOMETRIES[WIDE]['img_size'], seed=1)
    ref = torch_outputs(torch_model, x)
    assert_parity(mindspore_outputs(net, x), ref, 'unplanted')
    (gh, gw), w = embed.grid_size, embed.new_patch_size
    index = embed.tap_index.asnumpy().reshape(gh, gw, w, w, PIXEL_KERNEL ** 2)
    embed.tap_index = ms.Tensor(np.ascontiguousarray(index.transpose(0, 1, 3, 2, 4)).reshape(-1))
    report = compare_outputs(mindspore_outputs(net, x), ref)
    assert not report['passed'] and report['first_failure']['stage'] == 'embed', describe_failure(report)
