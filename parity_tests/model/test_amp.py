"""Mixed precision: the dtypes AMP levels really compute, and their error against torch fp32.

O2 must run every Dense matmul and the attention matmuls in fp16 while LayerNorm, softmax,
GELU and the residual adds stay fp32 (read from the compiled graph, ``parity.dtypes``);
its outputs and gradients must stay within the fp16-derived bounds of ``parity.precision``.
O3 (pure fp16) is measured the same way, so the report shows what O2 saves. Every bound
of every level catches a planted LayerNorm-eps fault made just large enough to exceed it.
"""
import functools

import mindspore as ms
import numpy as np
import pytest

import mindspore_tnt
import torch_ref
from convert.transfer import numpy_to_mindspore, numpy_to_torch
from mindspore_tnt.amp import apply_amp
from mindspore_tnt.tnt import IMPLS
from parity.dtypes import precision_roles, role_dtypes, trace_dtypes
from parity.forward import set_mode
from parity.gradients import AMP_LOSS_SCALE, compare_gradients, describe_gradients, mindspore_gradients, torch_gradients
from parity.precision import BOUNDS, compare_precision, describe_precision, mindspore_outputs
from parity_tests.helpers import fresh_net, reference, require_cpu_kernels, small_outer_stream
from tnt_common.compare import rel_err
from tnt_common.variants import VARIANTS
from torch_ref.outputs import torch_outputs

NAME = 'tnt_tiny_patch16_64'


def expected_counts(name):
    """How many calls of each role one forward pass of variant ``name`` makes."""
    depth = VARIANTS[name]['depth']
    return dict(embed_proj=1, dense_matmul=depth * 11 + 2,  # qk, v, proj, fc1, fc2 inner and outer, block proj; proj, head
                attention_matmul=depth * 4, layernorm=depth * 6 + 3, softmax=depth * 2,
                residual_add=depth * 5)


def net_of(name, impl=None):
    """``fresh_net``; ``impl='cpu'`` must really run the CPU kernels."""
    if impl == 'cpu':
        require_cpu_kernels()
    return fresh_net(name, impl)


def traced(level, plant=None, impl=None):
    _, x, _, _, _ = reference(NAME)
    net = net_of(NAME, impl)
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
    gelus = 2 * VARIANTS[NAME]['depth']
    # 'cpu': one kernel call per GELU; 'standard': MindSpore's GELU, several ops each
    assert counts['gelu'] == gelus if impl == 'cpu' else counts['gelu'] > gelus, counts
    assert dtypes == dict(embed_proj=['Float16'], dense_matmul=['Float16'], attention_matmul=['Float16'], layernorm=['Float32'],
                          softmax=['Float32'], gelu=['Float32'], residual_add=['Float32'])


@pytest.mark.parametrize('impl', IMPLS)
def test_o0_is_fp32_and_o3_is_fp16_everywhere(impl):
    assert all(d == ['Float32'] for d in traced('O0', impl=impl)[0].values())
    dtypes, _ = traced('O3', impl=impl)
    for role in ('embed_proj', 'dense_matmul', 'attention_matmul', 'softmax', 'gelu', 'residual_add'):
        assert dtypes[role] == ['Float16'], role
    assert 'Float16' in dtypes['layernorm']


def test_outer_softmax_kernel_is_judged_as_softmax():
    """At 160 px the outer attention (101 sentences) takes the softmax kernel at O0, and MindSpore's
    Softmax at O2 (fp16 scores): both count in the softmax role, in fp32."""
    require_cpu_kernels()
    net = mindspore_tnt.create_model(NAME, img_size=160, impl='cpu')
    net.set_train(False)
    x = ms.Tensor(np.zeros((1, 3, 160, 160), np.float32))
    for level in ('O0', 'O2'):
        calls = trace_dtypes(apply_amp(mindspore_tnt.WithStages(net), level), x)
        ops = [c['op'] for c in precision_roles(calls)['softmax']]
        assert len(ops) == 2 * VARIANTS[NAME]['depth'] and ('Custom' if level == 'O0' else 'Softmax') in ops
        assert role_dtypes(calls)['softmax'] == ['Float32']


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
    report = compare_precision(mindspore_outputs(net_of(name, impl), x, level), ref, level)
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


@pytest.fixture(scope='module')
def timm_initialised(tmp_path_factory):
    """A tnt_tiny file with timm's initialisation (std 0.02 weights): many of its gradients are
    below fp16's smallest normal number."""
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('timm_init') / 'tnt_tiny.safetensors'
    save_file({k: v.contiguous() for k, v in torch_ref.create_model(NAME).state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize('dtype', ['amp', 'fp16'])
def test_amp_gradients_of_timm_initialised_weights(timm_initialised, dtype, monkeypatch):
    """tnt-parity at O2 and O3 on such a file: the gradients pass with the loss scaled as training
    scales it; unscaled (the planted fault), tiny fp16 gradients lose their bits and fail the bound."""
    from parity import gradients
    from parity.report import build_report
    report = build_report(NAME, str(timm_initialised), 'pynative', dtype)
    assert report['forward']['passed'] and report['gradients']['passed'], describe_gradients(report['gradients'])
    monkeypatch.setattr(gradients, 'AMP_LOSS_SCALE', 1.)
    report = build_report(NAME, str(timm_initialised), 'pynative', dtype)
    assert not report['gradients']['passed'], describe_gradients(report['gradients'])


def test_o2_pynative_matches_graph():
    # PyNative must apply the same casts as the compiled graph (checked above)
    _, x, _, _, _ = reference(NAME)
    out = {}
    for mode in ('pynative', 'graph'):
        set_mode(mode)
        out[mode] = mindspore_outputs(fresh_net(NAME), x, 'O2')
    assert rel_err(out['pynative'][0], out['graph'][0]) <= 1e-6


# --- Every bound of every level catches a fault just beyond it ---
# The fault: MindSpore's LayerNorm eps 1e-7 where torch's is 1e-5, in every norm but the final
# one (``norm_eps``) or in the final one (``final_norm_eps``). It moves a norm's output by
# about eps / (2 variance of its input): at the reference weights 6.9e-4 relative, under
# fp16's rounding, so each case shrinks the sources of the norm's input -- the words'
# (pixel embedding and ``pixel_pos``, read by block 0's inner norms) or the outer stream's
# (read by the final norm) -- until the fault lands just beyond the bound. Measured values:
# docs/parity.md, "Planted faults under AMP".
WORD_SOURCES = ('pixel_embed.proj.weight', 'pixel_embed.proj.bias', 'pixel_pos')
FAULTS = {'norm_eps': dict(norm_eps=1e-7), 'final_norm_eps': dict(final_norm_eps=1e-7)}


@functools.lru_cache(maxsize=None)
def scaled_reference(words, outer):
    """(weights, torch fp32 outputs, torch gradients): ``reference(NAME)``'s weights with the
    words' sources times ``words`` and the outer stream's (``small_outer_stream``) times ``outer``."""
    weights, x, y, _, _ = reference(NAME)
    weights = {k: (v * np.float32(words)).astype(np.float32) if k in WORD_SOURCES else v for k, v in weights.items()}
    weights = small_outer_stream(weights, outer)
    model = numpy_to_torch(weights, torch_ref.create_model(NAME, weight_init='skip'))
    return weights, torch_outputs(model, x), torch_gradients(model, x, y)


def scaled_net(words, outer, fault=None):
    """The MindSpore TNT on ``scaled_reference(words, outer)``'s weights, with the planted ``fault``."""
    return numpy_to_mindspore(scaled_reference(words, outer)[0],
                              mindspore_tnt.create_model(NAME, weight_init='skip', **FAULTS.get(fault, {})))


@pytest.mark.parametrize('level,check,fault,words,outer', [
    ('O0', 'stage_rel', 'norm_eps', 1., 1.),
    ('O2', 'stage_rel', 'norm_eps', 0.2, 1.),
    ('O3', 'stage_rel', 'norm_eps', 0.1, 1.),
    ('O0', 'logits_cos', 'final_norm_eps', 1., 0.03),
    ('O2', 'logits_cos', 'final_norm_eps', 1., 0.003),
    ('O3', 'logits_cos', 'final_norm_eps', 1., 0.0025),
    ('O0', 'top1', 'final_norm_eps', 1., 0.002),
    ('O2', 'top1', 'final_norm_eps', 1., 0.002),
    ('O3', 'top1', 'final_norm_eps', 1., 0.002),
])
def test_output_bound_catches_a_layernorm_eps_fault(level, check, fault, words, outer):
    set_mode('pynative')
    x = reference(NAME)[1]
    _, ref, _ = scaled_reference(words, outer)
    honest = compare_precision(mindspore_outputs(scaled_net(words, outer), x, level), ref, level)
    assert honest['passed'], describe_precision(honest)
    report = compare_precision(mindspore_outputs(scaled_net(words, outer, fault), x, level), ref, level)
    print(describe_precision(report))
    assert not report['checks'][check], describe_precision(report)


# The loss scale each level's gradients back off to from AMP_LOSS_SCALE (2**16: six and seven
# calls a model at O2 and O3), where they start: one call each (halved again if not finite).
@pytest.mark.parametrize('level,words,loss_scale', [('O0', 1., AMP_LOSS_SCALE), ('O2', 0.08, 2. ** 11),
                                                    ('O3', 0.05, 2. ** 10)])
def test_gradient_bound_catches_a_layernorm_eps_fault(level, words, loss_scale):
    set_mode('pynative')
    _, x, y, _, _ = reference(NAME)
    _, _, ref = scaled_reference(words, 1.)
    bound = BOUNDS[level]['grad_rel']
    wrap = lambda cell: apply_amp(cell, level)
    honest = compare_gradients(mindspore_gradients(scaled_net(words, 1.), x, y, wrap=wrap, loss_scale=loss_scale),
                               ref, bound=bound)
    assert honest['passed'], describe_gradients(honest)
    report = compare_gradients(mindspore_gradients(scaled_net(words, 1., 'norm_eps'), x, y, wrap=wrap,
                                                   loss_scale=loss_scale), ref, bound=bound)
    print(level, describe_gradients(report))
    assert not report['passed'], describe_gradients(report)
