"""The variant table, parameter counts and timm state-dict compatibility of torch_ref."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import mindspore_tnt
import torch_ref
from convert.layouts import timm_shapes
from convert.transfer import numpy_to_torch
from tnt_common.variants import VARIANTS, list_models, pretrained_cfg

ALL = list_models()


def test_variant_table_imports_without_frameworks():
    code = ('import sys; import tnt_common.variants, tnt_common.compare, convert.keymap, '
            'convert.layouts; bad = {"torch", "mindspore"} & set(sys.modules); '
            'sys.exit(f"imported {bad}" if bad else 0)')
    subprocess.run([sys.executable, '-c', code], check=True)


def test_registry_names():
    assert {'tnt_s_patch16_224', 'tnt_b_patch16_224', 'tnt_s_legacy_patch16_224'} <= set(ALL)
    assert mindspore_tnt.list_models() == torch_ref.list_models() == ALL


@pytest.mark.parametrize('name', ALL)
def test_pretrained_cfg(name):
    cfg = pretrained_cfg(name)
    assert cfg['mean'] == cfg['std'] == (0.5, 0.5, 0.5)
    assert cfg['crop_pct'] == 0.9 and cfg['interpolation'] == 'bicubic'


@pytest.mark.parametrize('name', ALL)
def test_param_count_torch_and_mindspore(name):
    expected = VARIANTS[name]['num_params']
    assert sum(p.numel() for p in torch_ref.create_model(name).parameters()) == expected
    net = mindspore_tnt.create_model(name)
    assert sum(math.prod(p.shape) for p in net.get_parameters()) == expected


def test_published_param_counts():
    # timm's published counts (README, Variants); legacy S is published as about 23.76 M.
    assert VARIANTS['tnt_s_patch16_224']['num_params'] == 23_768_584
    assert VARIANTS['tnt_b_patch16_224']['num_params'] == 65_428_680
    assert round(VARIANTS['tnt_s_legacy_patch16_224']['num_params'] / 1e6, 2) == 23.76


@pytest.mark.parametrize('name', ALL)
def test_timm_state_dict_loads_strictly(name):
    shapes = timm_shapes(name)
    model = torch_ref.create_model(name)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    rng = np.random.default_rng(0)
    state = {k: torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for k, s in shapes.items()}
    model.load_state_dict(state, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_timm_state_dict_rejects_wrong_variant():
    arrays = {k: np.zeros(s, np.float32) for k, s in timm_shapes('tnt_s_patch16_224').items()}
    with pytest.raises(KeyError, match='blocks.0.norm2_proj'):
        numpy_to_torch(arrays, torch_ref.create_model('tnt_s_legacy_patch16_224'))


@pytest.mark.parametrize('num_classes,img_size', [(10, 64), (0, 96)])
def test_overrides(num_classes, img_size):
    shapes = timm_shapes('tnt_tiny_patch16_64', num_classes=num_classes, img_size=img_size)
    model = torch_ref.create_model('tnt_tiny_patch16_64', num_classes=num_classes, img_size=img_size)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    net = mindspore_tnt.create_model('tnt_tiny_patch16_64', num_classes=num_classes, img_size=img_size)
    assert sorted(tuple(p.shape) for p in net.get_parameters()) == sorted(shapes.values())


@pytest.mark.parametrize('name', ['tnt_tiny_patch16_64', 'tnt_s_legacy_patch16_224'])
def test_torch_ref_refuses_another_input_size(name):
    size = VARIANTS[name]['img_size']
    with pytest.raises(ValueError, match=f'input is {size + 16}x{size + 16}, the model takes {size}x{size}'):
        torch_ref.create_model(name)(torch.zeros(1, 3, size + 16, size + 16))
