"""Mixed precision: the dtypes AMP levels really compute, and their error against torch fp32.

O2 must run every Dense matmul and the attention matmuls in fp16 while LayerNorm, softmax,
GELU and the residual adds stay fp32 (read from the compiled graph, ``parity.dtypes``);
its outputs and gradients must stay within the fp16-derived bounds of ``parity.precision``.
O3 (pure fp16) is measured the same way, so the report shows what O2 saves.
"""
import mindspore as ms
import numpy as np
import pytest

import mindspore_tnt
from mindspore_tnt.amp import apply_amp
from mindspore_tnt.tnt import IMPLS
from parity.dtypes import precision_roles, role_dtypes, trace_dtypes
from parity.forward import set_mode
from parity.gradients import compare_gradients, describe_gradients, mindspore_gradients
from parity.precision import BOUNDS, compare_precision, describe_precision, mindspore_outputs
from parity_tests.helpers import fresh_net, reference
from tnt_common.variants import VARIANTS

NAME = 'tnt_tiny_patch16_64'


def expected_counts(name):
    """How many calls of each role one forward pass of variant ``name`` makes."""
    depth = VARIANTS[name]['depth']
    return dict(embed_proj=1, dense_matmul=depth * 11 + 2,  # qk, v, proj, fc1, fc2 inner and outer, block proj; proj, head
                attention_matmul=depth * 4, layernorm=depth * 6 + 3, softmax=depth * 2,
                residual_add=depth * 5)


def traced(level, plant=None, impl=None):
    _, x, _, _, _ = reference(NAME)
    net = fresh_net(NAME, impl)
    net.set_train(False)
    if plant:
        plant(net)
    calls = trace_dtypes(apply_amp(mindspore_tnt.WithStages(net), level), ms.Tensor(x))
    return role_dtypes(calls), {k: len(v) for k, v in precision_roles(calls).items()}


@pytest.mark.parametrize('impl', IMPLS)
def test_o2_dtypes_in_the_compiled_graph(impl):
    dtypes, counts = traced('O2', impl=impl)
    for role, n in expected_counts(NAME).items():
        assert counts[role] == n, (role, counts)
    assert counts['gelu'] > 0
    assert dtypes == dict(embed_proj=['Float16'], dense_matmul=['Float16'], attention_matmul=['Float16'], layernorm=['Float32'],
                          softmax=['Float32'], gelu=['Float32'], residual_add=['Float32'])


@pytest.mark.parametrize('impl', IMPLS)
def test_o0_is_fp32_and_o3_is_fp16_everywhere(impl):
    assert all(d == ['Float32'] for d in traced('O0', impl=impl)[0].values())
    dtypes, _ = traced('O3', impl=impl)
    for role in ('embed_proj', 'dense_matmul', 'attention_matmul', 'softmax', 'gelu', 'residual_add'):
        assert dtypes[role] == ['Float16'], role
    assert 'Float16' in dtypes['layernorm']


def test_catches_a_layernorm_left_in_fp16():
    dtypes, _ = traced('O2', plant=lambda net: net.blocks[1].norm_mlp.to_float(ms.float16))
    assert 'Float16' in dtypes['layernorm']
    assert dtypes['dense_matmul'] == ['Float16']


@pytest.mark.parametrize('impl', IMPLS)
def test_catches_a_pixel_embedding_left_in_fp32(impl):
    dtypes, _ = traced('O2', plant=lambda net: net.pixel_embed.to_float(ms.float32), impl=impl)
    assert dtypes['embed_proj'] == ['Float32']
    assert dtypes['dense_matmul'] == ['Float16']


@pytest.mark.parametrize('level', ['O2', 'O3'])
@pytest.mark.parametrize('name,impl', [(NAME, 'cpu'), (NAME, 'standard'), ('tnt_s_patch16_224', 'cpu')])
def test_amp_against_torch_fp32(name, impl, level):
    set_mode('pynative')
    _, x, _, ref, _ = reference(name)
    report = compare_precision(mindspore_outputs(fresh_net(name, impl), x, level), ref, level)
    print(describe_precision(report))
    assert report['passed'], describe_precision(report)
    # AMP really acted: the error is far above fp32 noise
    assert report['stage_worst'] > 10 * BOUNDS['O0']['stage_rel']


@pytest.mark.parametrize('level', ['O2', 'O3'])
def test_amp_gradients_against_torch_fp32(level):
    set_mode('pynative')
    _, x, y, _, ref = reference(NAME)
    test = mindspore_gradients(fresh_net(NAME), x, y, wrap=lambda cell: apply_amp(cell, level))
    report = compare_gradients(test, ref, bound=BOUNDS[level]['grad_rel'])
    print(level, describe_gradients(report))
    assert report['passed'], describe_gradients(report)
    assert report['worst']['rel'] > BOUNDS['O0']['grad_rel']


def test_o2_pynative_matches_graph():
    # PyNative must apply the same casts as the compiled graph (checked above)
    _, x, _, _, _ = reference(NAME)
    out = {}
    for mode in ('pynative', 'graph'):
        set_mode(mode)
        out[mode] = mindspore_outputs(fresh_net(NAME), x, 'O2')
    assert np.max(np.abs(out['graph'][0] - out['pynative'][0])) <= 1e-6 * np.max(np.abs(out['graph'][0]))
