"""Layout and variant detection, the key map's official rules, and the framework-free pieces
of the converters (MindSpore .ckpt codec, bf16 rounding, patch_pos resampling), each
checked against an independent reference: the frameworks themselves or the layout descriptions
(docs/convert.md, "Families")."""
import functools
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
import torch

from convert import keymap, mindspore_ckpt
from convert.canonical import from_timm, to_timm
from convert.dtypes import bf16_bits, from_bf16_bits
from convert.errors import ConversionError
from convert.layouts import stored_shapes, timm_shapes
from convert.resize import resample_patch_pos
from tnt_common.fixtures import random_timm_weights
from parity_tests import helpers
from parity_tests.helpers import inner_pos_of
from tnt_common import variants
from tnt_common.numerics import PRESETS

REAL = ['tnt_s_patch16_224', 'tnt_b_patch16_224', 'tnt_s_legacy_patch16_224']


def zeros(shapes):
    """Arrays of the given shapes that take no memory (detection reads shapes only)."""
    return {k: np.broadcast_to(np.zeros((), np.float32), s) for k, s in shapes.items()}


def test_importing_convert_loads_no_framework():
    code = ('import sys, convert, convert.keymap, convert.layouts, convert.canonical, convert.readers, '
            'convert.writers, convert.mindspore_ckpt, convert.resize, convert.dtypes, convert.cli; '
            'convert.ConversionError; bad = {"torch", "mindspore"} & set(sys.modules); '
            'sys.exit(f"imported {bad}" if bad else 0)')
    subprocess.run([sys.executable, '-c', code], check=True)


# family: (stored names from timm names, keyed independently; the graphs it holds)
FAMILIES = {
    'timm': (lambda a: a, (False, True)),
    'mindspore': (helpers.mindspore_names, (False, True)),
    'official': (helpers.to_official, (False,)),
    'mindcv': (helpers.to_mindcv, (False,)),
    'zoo': (lambda a: helpers.to_zoo(helpers.zoo_weights(a)), (False,)),
    'mmpretrain': (helpers.to_mmpretrain, (True,)),
}
CASES = [(name, family) for name in REAL + ['tnt_tiny_patch16_64'] for family, (_, graphs) in FAMILIES.items()
         if variants.VARIANTS[name]['legacy'] in graphs]


@pytest.mark.parametrize('name, family', CASES)
def test_detects_variant_and_family(name, family):
    shapes = timm_shapes(name)
    arrays = FAMILIES[family][0](zeros(shapes))
    assert {k: tuple(v.shape) for k, v in arrays.items()} == stored_shapes(family, name)
    can = to_timm(arrays)
    assert can.variant == name and can.num_classes == 1000
    assert can.img_size == variants.VARIANTS[name]['img_size']
    assert can.layout == family
    assert can.numerics == PRESETS[keymap.LAYOUTS[family].numerics or 'pytorch']
    assert {k: tuple(v.shape) for k, v in can.arrays.items()} == shapes
    assert ('legacy graph' in can.description) == variants.VARIANTS[name]['legacy']


@functools.lru_cache(maxsize=None)
def distinct_weights(name):
    """Every tensor of ``name`` distinct, so a swap between same-shaped tensors shows."""
    return random_timm_weights(timm_shapes(name))


@pytest.mark.parametrize('name, family', CASES)
def test_family_rules_match_the_description_and_invert(name, family):
    weights = distinct_weights(name)
    if family == 'zoo':
        weights = helpers.zoo_weights(weights)
    ours = from_timm(weights, family)
    independent = FAMILIES[family][0](weights)
    assert sorted(ours) == sorted(independent)
    for k in ours:
        assert ours[k].shape == independent[k].shape and np.array_equal(ours[k], independent[k]), k
    back = to_timm(ours).arrays
    assert sorted(back) == sorted(weights) and all(np.array_equal(back[k], weights[k]) for k in weights)


@pytest.mark.parametrize('name', REAL)
def test_detects_variant_with_other_head_and_size(name):
    can = to_timm(zeros(timm_shapes(name, num_classes=0, img_size=384)))
    assert (can.variant, can.num_classes, can.img_size) == (name, 0, 384)
    assert to_timm(zeros(timm_shapes(name, num_classes=10))).num_classes == 10


def test_ambiguous_shapes_need_model(monkeypatch):
    table = dict(variants.VARIANTS, tnt_tiny_copy=variants.VARIANTS['tnt_tiny_patch16_64'])
    monkeypatch.setattr('convert.layouts.VARIANTS', table)
    monkeypatch.setattr('convert.canonical.VARIANTS', table)
    arrays = zeros(timm_shapes('tnt_tiny_patch16_64'))
    with pytest.raises(ConversionError, match='ambiguous: the shapes fit tnt_tiny_copy, tnt_tiny_patch16_64'):
        to_timm(arrays)
    assert to_timm(arrays, 'tnt_tiny_copy').variant == 'tnt_tiny_copy'


def test_inner_pos_transform_against_design():
    pixel_pos = np.random.default_rng(0).standard_normal((1, 6, 4, 4)).astype(np.float32)
    to_timm_fn, to_official_fn = keymap.OFFICIAL_VALUE_TRANSFORMS['pixel_pos']
    inner = to_official_fn(pixel_pos)
    np.testing.assert_array_equal(inner, inner_pos_of(pixel_pos))
    np.testing.assert_array_equal(to_timm_fn(inner), pixel_pos)


@pytest.mark.parametrize('grid', [2, 3, 6, 14])
def test_patch_pos_resampling_matches_timms(grid):
    """timm's ``resample_abs_pos_embed``: torch's antialiased bicubic (shrinking and growing)."""
    pos = np.random.default_rng(1).standard_normal((1, 1 + 4 * 4, 8)).astype(np.float32)
    ours = resample_patch_pos(pos, grid)
    g = torch.from_numpy(pos[:, 1:].astype(np.float64)).reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(g, size=(grid, grid), mode='bicubic', align_corners=False, antialias=True)
    plain = torch.nn.functional.interpolate(g, size=(grid, grid), mode='bicubic', align_corners=False)
    assert np.abs(plain.numpy() - ref.numpy()).max() > 1e-3    # the check tells the two kernels apart
    ref = ref.permute(0, 2, 3, 1).reshape(1, grid * grid, 8).numpy()
    np.testing.assert_array_equal(ours[:, 0], pos[:, 0])
    np.testing.assert_allclose(ours[:, 1:], ref, rtol=0, atol=5e-7)  # fp32 rounding of |x| < 4


def test_bf16_rounding_matches_torch():
    rng = np.random.default_rng(2)
    a = np.concatenate([rng.standard_normal(10000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 10000),
                        from_bf16_bits(np.arange(0, 0x7F80, 7, dtype=np.uint16)) * np.float32(1 + 2 ** -8),
                        np.float32([0., -0., 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4e38])])
    ref = torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bf16_bits(a), ref)
    np.testing.assert_array_equal(from_bf16_bits(ref), torch.from_numpy(a).to(torch.bfloat16).float().numpy())


def ms_dict(params):
    return {k: (v.float().asnumpy() if v.dtype == ms.bfloat16 else v.asnumpy()) for k, v in params.items()}


def test_ckpt_writer_is_read_by_mindspore(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {'a.weight': rng.standard_normal((5, 7)).astype(np.float32),
              'b': rng.standard_normal((3, 1, 2, 2)).astype(np.float16), 'c': np.arange(4, dtype=np.int64)}
    with open(tmp_path / 'x.ckpt', 'wb') as f:
        for k, v in arrays.items():
            mindspore_ckpt.write_tensor(f, k, v, {'float32': 'fp32', 'float16': 'fp16', 'int64': 'int64'}[str(v.dtype)])
        mindspore_ckpt.write_tensor(f, 'h', bf16_bits(arrays['a.weight']), 'bf16')
    got = ms.load_checkpoint(str(tmp_path / 'x.ckpt'))
    assert str(got['h'].dtype) == 'BFloat16'
    got = ms_dict(got)
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v), k
    np.testing.assert_array_equal(got['h'], from_bf16_bits(bf16_bits(arrays['a.weight'])))


@pytest.mark.parametrize('crc', [False, True])
def test_ckpt_reader_reads_mindspore_files(crc, tmp_path):
    rng = np.random.default_rng(4)
    params = [{'name': 'w', 'data': ms.Tensor(rng.standard_normal((4, 3)).astype(np.float32))},
              {'name': 'h', 'data': ms.Tensor(rng.standard_normal(5).astype(np.float16))},
              {'name': 'b', 'data': ms.Tensor(rng.standard_normal(6).astype(np.float32), ms.bfloat16)}]
    path = str(tmp_path / 'ms.ckpt')
    ms.save_checkpoint(params, path, crc_check=crc, append_dict={'epoch_num': 2})
    ours = mindspore_ckpt.read(path)
    ref = ms_dict(ms.load_checkpoint(path))
    assert sorted(ours) == sorted(ref)
    for k in ref:
        assert np.array_equal(ours[k], ref[k]) and ours[k].dtype == ref[k].dtype, k
    if crc:  # flip one payload byte: the CRC must catch it
        data = bytearray(open(path, 'rb').read())
        data[40] ^= 1
        (tmp_path / 'bad.ckpt').write_bytes(bytes(data))
        with pytest.raises(ConversionError, match='CRC mismatch'):
            mindspore_ckpt.read(str(tmp_path / 'bad.ckpt'))
