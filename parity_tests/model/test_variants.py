"""The variant registry against timm: names, pretrained configs, parameter counts and
state-dict layout of the models both frameworks build."""
import functools
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
from tnt_common.variants import VARIANTS, list_models, list_pretrained, pretrained_cfg

ALL = list_models()
FRAMEWORKS = {'torch': torch_ref, 'mindspore': mindspore_tnt}
# timm's TNT models (timm/models/tnt.py) and the parameter counts timm reports for them
TIMM_PARAM_COUNTS = {'tnt_s_patch16_224': 23_768_584, 'tnt_b_patch16_224': 65_428_680,
                     'tnt_s_legacy_patch16_224': 23_755_336}
# timm's pretrained configs of TNT: hub ids 'timm/<architecture>.<tag>', Inception mean and std
TIMM_PRETRAINED = ('tnt_s_legacy_patch16_224.in1k', 'tnt_s_patch16_224.in1k', 'tnt_b_patch16_224.in1k')
TIMM_PREPROCESSING = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.9, interpolation='bicubic')
TINY = 'tnt_tiny_patch16_64'  # this project's own small variant
NOT_REGISTERED = ('tnt_m_patch16_224', 'tnt_s_patch16_384', 'vit_small_patch16_224', 'tnt_s_patch16_224.in21k')


@functools.lru_cache(maxsize=None)
def param_count(framework, name):
    """Number of parameters of the model ``name`` as ``framework`` builds it."""
    if framework == 'torch':
        return sum(p.numel() for p in torch_ref.create_model(name, weight_init='skip').parameters())
    return sum(math.prod(p.shape) for p in mindspore_tnt.create_model(name, weight_init='skip').get_parameters())


def test_variant_table_imports_without_frameworks():
    code = ('import sys; import tnt_common.variants, tnt_common.compare, convert.keymap, '
            'convert.layouts; bad = {"torch", "mindspore"} & set(sys.modules); '
            'sys.exit(f"imported {bad}" if bad else 0)')
    subprocess.run([sys.executable, '-c', code], check=True)


def test_registry_is_timms_and_the_tiny_variant():
    assert set(ALL) == set(TIMM_PARAM_COUNTS) | {TINY}
    assert list_pretrained() == sorted(TIMM_PRETRAINED)


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_list_models_is_what_builds(framework):
    # every listed variant builds, with the parameter count of the table; nothing else builds
    module = FRAMEWORKS[framework]
    built = {name: param_count(framework, name) for name in module.list_models()}
    assert built == {name: v['num_params'] for name, v in VARIANTS.items()}
    for name in NOT_REGISTERED:
        with pytest.raises(ValueError, match='unknown'):
            module.create_model(name)


@pytest.mark.parametrize('framework', FRAMEWORKS)
@pytest.mark.parametrize('name', sorted(TIMM_PARAM_COUNTS))
def test_parameter_count_is_timms(framework, name):
    assert param_count(framework, name) == TIMM_PARAM_COUNTS[name]


@pytest.mark.parametrize('name', ALL)
def test_pretrained_cfg(name):
    cfg = pretrained_cfg(name)
    assert {k: cfg[k] for k in TIMM_PREPROCESSING} == TIMM_PREPROCESSING
    assert cfg['input_size'] == (3, VARIANTS[name]['img_size'], VARIANTS[name]['img_size'])
    tagged = f"{name}.{cfg['tag']}"
    assert pretrained_cfg(tagged) == cfg
    assert cfg['hf_hub_id'] == (f'timm/{tagged}' if tagged in TIMM_PRETRAINED else '')


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
        numpy_to_torch(arrays, torch_ref.create_model('tnt_s_legacy_patch16_224', weight_init='skip'))


@pytest.mark.parametrize('num_classes,img_size', [(10, 64), (0, 96)])
def test_overrides(num_classes, img_size):
    shapes = timm_shapes(TINY, num_classes=num_classes, img_size=img_size)
    model = torch_ref.create_model(TINY, num_classes=num_classes, img_size=img_size)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    net = mindspore_tnt.create_model(TINY, num_classes=num_classes, img_size=img_size)
    assert sorted(tuple(p.shape) for p in net.get_parameters()) == sorted(shapes.values())


@pytest.mark.parametrize('name', [TINY, 'tnt_s_legacy_patch16_224'])
def test_torch_ref_refuses_another_input_size(name):
    size = VARIANTS[name]['img_size']
    with pytest.raises(ValueError, match=f'input is {size + 16}x{size + 16}, the model takes {size}x{size}'):
        torch_ref.create_model(name)(torch.zeros(1, 3, size + 16, size + 16))
