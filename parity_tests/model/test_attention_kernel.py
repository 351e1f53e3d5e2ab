"""The CPU attention kernel (``mindspore_tnt.attention``) against float64 numerics, torch and MindSpore's ops.

Forward: within FP32_BOUND of the exact (float64) heads' softmax((q kᵀ) * scale) v, in the
layouts of TNT (``qk``, ``v``) and PyramidTNT (``q``, ``kv``), on the inner attention's shapes
of TNT-S, TNT-B and PyramidTNT-S and on a sequence length the kernel has no fixed-size path
for, and with scores up to ~1e3 (where exp overflows unless the softmax subtracts the max).
Gradients (d[a, b]): within GRAD_BOUND of the float64 ones. ``Attention`` of
``impl='cpu'`` matches ``impl='standard'`` (MindSpore's ops) and torch_ref's ``Attention``,
outputs and gradients, in GRAPH and PYNATIVE mode. A kernel built with the heads written
in the wrong order, the scale applied after the softmax, P left untransposed in the
backward or the softmax's row sum dropped from it must fail the same checks. Where the
kernel does not run -- no compiler, fp16, a long sequence -- ``Attention`` is MindSpore's
formulation: within FP32_BOUND of torch_ref's in fp32 (the softmax, head-move and bias kernels
still run), bit for bit ``impl='standard'`` in fp16 (no kernel takes it); attention dropout in
training never calls the kernel.
"""
import mindspore as ms
import numpy as np
import pytest
import torch

import torch_ref.tnt
from mindspore_tnt import attention, ptnt, tnt
from parity.forward import set_mode
from parity.gradients import GRAD_BOUND
from parity_tests.helpers import BackwardOf, faulty_kernel_library, plant_kernel_faults, require_cpu_kernels, without_compiler
from tnt_common.compare import FP32_BOUND, rel_err

# (sequences, length, dim, heads, q/k/v layout): TNT-S and TNT-B inner attention (batch 4),
# PyramidTNT-S stage 0's, and a length without the kernel's fixed-size path
SHAPES = {'tnt_s': (784, 16, 24, 4, 'qk'), 'tnt_b': (784, 16, 40, 4, 'qk'), 'ptnt_s': (256, 16, 8, 2, 'q'),
          'length 17': (40, 17, 24, 4, 'qk'), 'length 5, q/kv': (40, 5, 24, 3, 'q')}


KEPT = []


def keep(obj):
    """``obj`` (a cell or op this module compiles), never freed: MindSpore's compile caches key
    Python objects by ``id``, and a later object at a freed one's address can meet its stale entry."""
    KEPT.append(obj)
    return obj


def inputs(n, length, dim, heads, layout, seed=0):
    """Projections a, b ([a, b] = [q, k, v]), the scale and an output gradient."""
    rng = np.random.default_rng(seed)
    ca = 2 * dim if layout == 'qk' else dim
    a = rng.standard_normal((n, length, ca)).astype(np.float32)
    b = rng.standard_normal((n, length, 3 * dim - ca)).astype(np.float32)
    dout = rng.standard_normal((n, length, dim)).astype(np.float32)
    return a, b, (dim // heads) ** -0.5, dout


def heads_of(a, b, heads):
    """q, k, v in float64, (N, H, L, d) each."""
    x = np.concatenate([a, b], -1).astype(np.float64)
    n, length, c = x.shape
    dim = c // 3
    return [x[..., t * dim:(t + 1) * dim].reshape(n, length, heads, -1).transpose(0, 2, 1, 3) for t in range(3)]


def merge(x):
    """(N, H, L, d) -> (N, L, H*d)."""
    n, h, length, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(n, length, h * d)


def exact(a, b, heads, scale):
    q, k, v = heads_of(a, b, heads)
    s = q @ k.transpose(0, 1, 3, 2) * scale
    p = np.exp(s - s.max(-1, keepdims=True))
    return merge(p / p.sum(-1, keepdims=True) @ v)


def exact_grads(a, b, heads, scale, dout):
    """d[a, b] of sum(out * dout), in float64."""
    q, k, v = heads_of(a, b, heads)
    s = q @ k.transpose(0, 1, 3, 2) * scale
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    do = heads_of(np.zeros_like(dout), np.concatenate([dout, dout], -1), heads)[1]  # dout's heads
    dp = do @ v.transpose(0, 1, 3, 2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) * scale
    grad = np.concatenate([merge(ds @ k), merge(ds.transpose(0, 1, 3, 2) @ q), merge(p.transpose(0, 1, 3, 2) @ do)], -1)
    return grad[..., :a.shape[-1]], grad[..., a.shape[-1]:]


def kernel_cell(kernel, heads, scale):
    cell = attention.SmallHeadAttention(heads, scale, cpu_kernel=True)
    cell.kernel = kernel
    return cell


def errors(kernel, a, b, heads, scale, dout):
    """(forward error, [d a error, d b error]) of ``kernel`` against float64."""
    cell = keep(kernel_cell(kernel, heads, scale))
    out = cell(ms.Tensor(a), ms.Tensor(b)).asnumpy()
    grads = ms.grad(keep(BackwardOf(cell, dout)), grad_position=(0, 1))(ms.Tensor(a), ms.Tensor(b))
    want = exact_grads(a, b, heads, scale, dout)
    return (rel_err(out, exact(a, b, heads, scale)),
            [rel_err(g.asnumpy(), w) for g, w in zip(grads, want)])


@pytest.fixture(scope='module')
def kernel():
    require_cpu_kernels()
    return attention.kernel_ops()


@pytest.mark.parametrize('shape', SHAPES)
def test_matches_float64(kernel, mode, shape):
    n, length, dim, heads, layout = SHAPES[shape]
    a, b, scale, dout = inputs(n, length, dim, heads, layout)
    forward, grads = errors(kernel, a, b, heads, scale, dout)
    assert forward < FP32_BOUND
    assert max(grads) < GRAD_BOUND


def test_large_scores_keep_the_softmax_finite(kernel):
    set_mode('pynative')
    a, b, _, dout = inputs(64, 16, 24, 4, 'qk', seed=1)
    # integer q and k and a power-of-two scale: scores up to ~1e3, exact in float32 (so the
    # float64 reference is well conditioned), where exp overflows without the max subtracted
    a = np.random.default_rng(1).integers(-20, 21, a.shape).astype(np.float32)
    forward, grads = errors(kernel, a, b, 4, 0.5, dout)
    assert forward < FP32_BOUND
    assert max(grads) < GRAD_BOUND


def attention_pair(dim, heads, seed=0):
    """``tnt.Attention`` with impl 'cpu' and 'standard' and torch_ref's, holding the same weights."""
    rng = np.random.default_rng(seed)
    ref = torch_ref.tnt.Attention(dim, heads)
    weights = {k: (0.3 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in ref.state_dict().items()}
    ref.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    cells = []
    for impl in ('cpu', 'standard'):
        cell = tnt.Attention(dim, heads, impl=impl)
        for p in cell.get_parameters():
            p.set_data(ms.Tensor(weights[p.name]))
        cells.append(keep(cell))
    return cells[0], cells[1], ref


def cell_results(cell, x, dout):
    """Output and gradients (input, then parameters by name) of ``cell``."""
    weights = cell.trainable_params()
    out = cell(ms.Tensor(x)).asnumpy()
    dx, dw = ms.grad(keep(BackwardOf(cell, dout)), grad_position=0, weights=weights)(ms.Tensor(x))
    return out, [dx.asnumpy()] + [g.asnumpy() for _, g in sorted(zip([p.name for p in weights], dw))]


def torch_results(ref, x, dout):
    tx = torch.tensor(x, requires_grad=True)
    out = ref(tx)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), [tx.grad.numpy()] + [p.grad.numpy() for _, p in sorted(ref.named_parameters())]


@pytest.mark.parametrize('dim,heads', [(24, 4), (40, 4)])
def test_attention_matches_standard_and_torch(kernel, mode, dim, heads):
    fused, standard, ref = attention_pair(dim, heads)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 16, dim)).astype(np.float32)
    dout = rng.standard_normal((64, 16, dim)).astype(np.float32)
    assert attention.takes(fused.fused.kernel, ms.Tensor(x), False)
    assert not attention.takes(standard.fused.kernel, ms.Tensor(x), False)
    got = cell_results(fused, x, dout)
    for want in (cell_results(standard, x, dout), torch_results(ref, x, dout)):
        assert rel_err(got[0], want[0]) < FP32_BOUND
        assert max(rel_err(g, w) for g, w in zip(got[1], want[1])) < GRAD_BOUND


def test_pyramid_inner_attention_uses_the_kernel(kernel):
    set_mode('pynative')
    cells = [ptnt.Attention(8, 2, impl=impl) for impl in ('cpu', 'standard')]
    for p, q in zip(cells[0].get_parameters(), cells[1].get_parameters()):
        p.set_data(q.data)
    x = ms.Tensor(np.random.default_rng(2).standard_normal((64, 16, 8)).astype(np.float32))
    assert attention.takes(cells[0].fused.kernel, x, False)
    assert rel_err(cells[0](x, 4, 4).asnumpy(), cells[1](x, 4, 4).asnumpy()) < FP32_BOUND
    assert ptnt.Attention(8, 2, sr_ratio=2, impl='cpu').fused.kernel is None


def faulty_kernel(edits):
    """The kernel built from its source with each ``old`` of ``edits`` replaced by its ``new``."""
    return keep(attention._attention_ops(faulty_kernel_library('attention_cpu.cc', edits)))


# (edits, whether the forward is wrong, whether the gradients are)
FAULTS = {
    'heads in the wrong order': ([('out + s * len * lay.dim, lay.dim, h * d);',
                                   'out + s * len * lay.dim, lay.dim, (lay.heads - 1 - h) * d);')], True, False),
    'scale after the softmax': ([('s[i] *= scale;', 's[i] *= 1.0f;'),
                                 ('for (int64_t i = 0; i < len; ++i) s[i] /= rsum[i];',
                                  'for (int64_t i = 0; i < len; ++i) s[i] = s[i] / rsum[i] * scale;')], True, True),
    'P not transposed in the backward': ([('transpose<kLen>(pt, len, p);', 'std::copy(pt, pt + len * len, p);')],
                                         False, True),
    'row sum dropped from dS': ([('g[i] = pj[i] * (g[i] - row[i]) * scale;', 'g[i] = pj[i] * g[i] * scale;')],
                                False, True),
}
plant_kernel_faults('attention_cpu.cc', *(edits for edits, _, _ in FAULTS.values()))


@pytest.mark.parametrize('fault', FAULTS)
def test_catches_planted_kernel_faults(kernel, fault):
    set_mode('pynative')
    edits, forward_wrong, grads_wrong = FAULTS[fault]
    a, b, scale, dout = inputs(64, 16, 24, 4, 'qk', seed=3)
    forward, grads = errors(kernel, a, b, 4, scale, dout)
    assert forward < FP32_BOUND and max(grads) < GRAD_BOUND
    forward, grads = errors(faulty_kernel(edits), a, b, 4, scale, dout)
    assert (forward > FP32_BOUND) == forward_wrong
    assert (max(grads) > GRAD_BOUND) == grads_wrong


def assert_standard(cell, standard, x):
    assert np.array_equal(cell(x).asnumpy(), standard(x).asnumpy())


def assert_torch(cell, ref, x):
    """``cell`` on the float32 array ``x`` within FP32_BOUND of torch_ref's ``ref``."""
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    assert rel_err(cell(ms.Tensor(x)).asnumpy(), want) < FP32_BOUND


def test_falls_back_without_a_compiler(monkeypatch):
    keep(attention.kernel_ops())
    with without_compiler(monkeypatch, attention, 'attention'):
        set_mode('pynative')
        fused, _, ref = attention_pair(24, 4)
        assert fused.fused.kernel is None
        assert_torch(fused, ref, np.random.default_rng(3).standard_normal((4, 16, 24)).astype(np.float32))


def test_fp16_long_sequences_and_dropout_fall_back(kernel):
    set_mode('pynative')
    fused, standard, ref = attention_pair(24, 4, seed=4)
    rng = np.random.default_rng(5)
    x16 = ms.Tensor(rng.standard_normal((4, 16, 24)), ms.float16)
    long = rng.standard_normal((2, attention.MAX_LEN + 1, 24)).astype(np.float32)
    assert not attention.takes(kernel, x16, False) and not attention.takes(kernel, ms.Tensor(long), False)
    assert_torch(fused, ref, long)
    for cell in (fused, standard):
        cell.to_float(ms.float16)
    assert_standard(fused, standard, x16)
    assert not attention.takes(kernel, ms.Tensor(np.ones((4, 16, 24), np.float32)), True)


def test_attention_dropout_in_training_falls_back(kernel):
    set_mode('pynative')

    def refuse(*args):
        raise AssertionError('the kernel ran')

    cell = tnt.Attention(24, 4, attn_drop=0.1, impl='cpu')
    cell.fused.kernel = refuse
    x = ms.Tensor(np.ones((4, 16, 24), np.float32))
    with pytest.raises(AssertionError, match='the kernel ran'):
        cell(x)
    cell.set_train(True)
    cell(x)
