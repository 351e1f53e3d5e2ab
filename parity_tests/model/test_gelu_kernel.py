"""The CPU GELU kernels (``mindspore_tnt.gelu``) against float64 numerics, torch, and each other.

``GELU(cpu_kernel=True)``: within FP32_BOUND of the float64 ``x·Φ(x)`` and its gradient
within GRAD_BOUND of torch.autograd in float64; a kernel with Φ taken from erf(x), or φ
without its 1/√(2π), must fail them. ``Mlp.fc1_act``, fc1's bias added inside the
GELU kernel (``GeluErfBias``): the same bits as ``GELU(fc1(x))`` on the bias and GELU kernels,
output and every gradient (x, weight, bias), in both modes, on TNT-S's fc1 shapes and on rows
that are not whole vector lanes. A fused kernel that drops the bias, forward or backward,
must fail the same comparison. Under AMP the two agree bit for bit (the fused kernel takes fp32 only),
and a bias subtracted on fc1_act's fp16 path must break that agreement.

The erf the kernels use (``vector_math.h``'s polynomials): within ``ERF_ULPS`` of float64 on
every 251st float in [0, 4.5] and their negatives, exact at 0, ±inf and NaN; the lower
polynomial stretched past its interval must fail that bound (it passes FP32_BOUND).
"""
import ctypes
import math

import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import ops

from scipy.special import erf

from mindspore_tnt import cpu_kernels, dense, gelu
from mindspore_tnt.tnt import Mlp
from parity.forward import set_mode
from parity.gradients import GRAD_BOUND
from parity_tests.helpers import BackwardOf, faulty_kernel_library, plant_kernel_faults, require_cpu_kernels
from tnt_common.compare import FP32_BOUND, rel_err

# (input shape, fc1 out features): TNT-S batch 2 inner and outer fc1, rows of 37 and 5 (lane remainders)
SHAPES = [((2, 3136, 24), 96), ((2, 197, 384), 1536), ((9, 11, 7), 37), ((517, 33), 5)]


def inputs(shape, out, seed=0):
    rng = np.random.default_rng(seed)
    x = (2 * rng.standard_normal(shape)).astype(np.float32)
    w = (rng.standard_normal((out, shape[-1])) / np.sqrt(shape[-1])).astype(np.float32)
    b = rng.standard_normal(out).astype(np.float32)
    dy = rng.standard_normal(shape[:-1] + (out,)).astype(np.float32)
    return x, w, b, dy


class FcGelu(ms.nn.Cell):
    """An MLP's act(fc1(x)), through ``Mlp.fc1_act`` (``fused``) or as two calls."""

    def __init__(self, w, b, fused, bias_kernel=None):
        super().__init__()
        self.mlp = Mlp(w.shape[1], w.shape[0], impl='cpu')
        self.mlp.fc1.weight.set_data(ms.Tensor(w))
        self.mlp.fc1.bias.set_data(ms.Tensor(b))
        if bias_kernel is not None:
            self.mlp.act.bias_kernel = bias_kernel
        self.fused = fused

    def construct(self, x):
        return self.mlp.fc1_act(x) if self.fused else self.mlp.act(self.mlp.fc1(x))


def outputs(net, x, dy):
    """(y, dx, dw, db) of ``net`` as numpy (w, b: fc1's)."""
    grad = ms.value_and_grad(BackwardOf(net, dy), grad_position=0, weights=net.mlp.fc1.trainable_params())
    _, (dx, (dw, db)) = grad(ms.Tensor(x))
    return [net(ms.Tensor(x)).asnumpy(), dx.asnumpy(), dw.asnumpy(), db.asnumpy()]


@pytest.fixture(scope='module')
def kernel():
    require_cpu_kernels()
    assert gelu.bias_kernel_ops() is not None
    return gelu.kernel_ops()


def gelu_errors(kernel):
    """Relative errors of (y, dx) of a GELU on ``kernel`` against float64 and torch's float64 autograd."""
    rng = np.random.default_rng(1)
    x = np.concatenate([np.linspace(-10, 10, 2001), 3 * rng.standard_normal(100003)]).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    net = gelu.GELU(cpu_kernel=True)
    net.kernel = kernel
    y = net(ms.Tensor(x)).asnumpy()
    dx = ms.grad(BackwardOf(net, dy))(ms.Tensor(x)).asnumpy()
    x64 = x.astype(np.float64)
    want = x64 * 0.5 * (1 + np.vectorize(math.erf)(x64 / math.sqrt(2)))
    tx = torch.tensor(x64, requires_grad=True)
    torch.nn.functional.gelu(tx).backward(torch.tensor(dy, dtype=torch.float64))
    return rel_err(y, want), rel_err(dx, tx.grad.numpy())


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
def test_gelu_matches_float64(kernel, mode):
    set_mode(mode)
    y_err, dx_err = gelu_errors(kernel)
    assert y_err < FP32_BOUND and dx_err < GRAD_BOUND


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
@pytest.mark.parametrize('shape,out', SHAPES)
def test_bias_inside_the_kernel_changes_no_bit(kernel, mode, shape, out):
    set_mode(mode)
    x, w, b, dy = inputs(shape, out)
    fused, separate = (outputs(FcGelu(w, b, f), x, dy) for f in (True, False))
    for name, got, want in zip(('y', 'dx', 'dw', 'db'), fused, separate):
        assert np.array_equal(got, want), name


def fused_errors(bias_kernel):
    """Relative errors of (y, dx, dw, db) of ``fc1_act`` on ``bias_kernel`` against the two
    kernels apart, once the built kernel is seen to give their bits."""
    x, w, b, dy = inputs((2, 197, 384), 1536, seed=2)
    separate = outputs(FcGelu(w, b, False), x, dy)
    assert [np.array_equal(g, s) for g, s in zip(outputs(FcGelu(w, b, True), x, dy), separate)] == [True] * 4
    return [rel_err(g, s) for g, s in zip(outputs(FcGelu(w, b, True, bias_kernel), x, dy), separate)]


BIASED = 'z[i] = b ? x[i] + b[i] : x[i];\n    e[i] = z[i] * kSqrtHalf;\n'
UNBIASED = 'z[i] = x[i];\n    e[i] = z[i] * kSqrtHalf;\n'
# fault: (edit of gelu_cpu.cc, the check it must fail: 'float64' for the GELU, 'bits' for fc1_act)
FAULTS = {
    'Φ from erf(x), not erf(x/√2)': (('y[i] = z[i] * 0.5f * (1.0f + e[i]);',
                                      'y[i] = z[i] * 0.5f * (1.0f + erff(z[i]));'), 'float64'),
    'φ without 1/√(2π)': (('const float pdf = kInvSqrt2Pi * p[i];', 'const float pdf = p[i];'), 'float64'),
    'bias dropped in the forward': ((BIASED + '  }\n  tnt_cpu::erf_lanes', UNBIASED + '  }\n  tnt_cpu::erf_lanes'),
                                    'bits'),
    'bias dropped in the gradient': ((BIASED + '    p[i]', UNBIASED + '    p[i]'), 'bits'),
}
plant_kernel_faults('gelu_cpu.cc', *([edit] for edit, _ in FAULTS.values()))


@pytest.mark.parametrize('fault', FAULTS)
def test_catches_planted_kernel_faults(kernel, fault):
    set_mode('pynative')
    edit, check = FAULTS[fault]
    path = faulty_kernel_library('gelu_cpu.cc', [edit])
    if check == 'float64':
        y_err, dx_err = gelu_errors(gelu._gelu_ops(path))
        assert y_err > FP32_BOUND or dx_err > GRAD_BOUND, (y_err, dx_err)
    else:
        errors = fused_errors(gelu._gelu_bias_ops(path, dense.bias_grad_op()))
        assert max(errors) > GRAD_BOUND, errors


def amp_outputs(level, plant=lambda net: None):
    """Outputs of ``fc1_act`` (``plant(net)`` applied) and of act(fc1(x)) under AMP ``level``, GRAPH mode."""
    set_mode('graph')
    x, w, b, _ = inputs((4, 5, 24), 96, seed=3)
    fused, separate = FcGelu(w, b, True), FcGelu(w, b, False)
    plant(fused)
    return [ms.amp.auto_mixed_precision(net, level, ms.float16)(ms.Tensor(x)).asnumpy() for net in (fused, separate)]


@pytest.mark.parametrize('level', ['auto', 'O3'])
def test_amp_keeps_the_separate_path(kernel, level):
    """Under AMP ``fc1_act`` computes what act(fc1(x)) computes, bit for bit."""
    assert np.array_equal(*amp_outputs(level))


@pytest.mark.parametrize('level', ['auto', 'O3'])
def test_amp_comparison_catches_a_wrong_bias(kernel, level):
    """Planted: fc1_act's fp16 path subtracts fc1's bias (its ``bias_add`` replaced)."""
    def plant(net):
        net.mlp.fc1.bias_add = ops.Sub()
    assert not np.array_equal(*amp_outputs(level, plant))


ERF_ULPS = 1.5   # largest error found over every float in [0, 4.5]: 1.42 ulp (at x = 1.0355)
ERF_PROBE = """
extern "C" void erf_probe(int64_t n, const float *x, float *y) {
  for (int64_t i = 0; i < n; i += tnt_cpu::kLanes) tnt_cpu::erf_lanes(x + i, y + i);
}
"""


def erf_of(x, tmp_path, monkeypatch, edits=()):
    """``erf_lanes`` of ``vector_math.h`` (each ``(old, new)`` of ``edits`` applied) on float32 ``x``."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    with open(f'{cpu_kernels.HERE}/vector_math.h') as f:
        text = f.read().replace('#pragma once', '')
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tmp_path / 'erf_probe.cc').write_text(text + ERF_PROBE)
    probe = ctypes.CDLL(cpu_kernels.build(str(tmp_path / 'erf_probe.cc'), cpu_kernels.compiler())).erf_probe
    n = -(-x.size // 16) * 16   # whole lanes
    x_in, y = np.zeros(n, np.float32), np.empty(n, np.float32)
    x_in[:x.size] = x
    probe(ctypes.c_int64(n), x_in.ctypes.data_as(ctypes.c_void_p), y.ctypes.data_as(ctypes.c_void_p))
    return y[:x.size]


def erf_ulps(tmp_path, monkeypatch, edits=()):
    """Largest error of ``erf_of``, in float32 ulps of erf's value, on every 251st float in [0, 4.5] and
    their negatives."""
    x = np.arange(0, np.float32(4.5).view(np.int32), 251, dtype=np.int32).view(np.float32)
    x = np.concatenate([x, -x])
    want = erf(x.astype(np.float64))
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    return float(np.max(np.abs(erf_of(x, tmp_path, monkeypatch, edits) - want) / ulp))


def test_erf_within_its_ulps(kernel, tmp_path, monkeypatch):
    assert erf_ulps(tmp_path, monkeypatch) <= ERF_ULPS
    special = np.array([0., -0., np.inf, -np.inf, np.nan, 1e-45, 5., -5.], np.float32)
    got = erf_of(special, tmp_path, monkeypatch)
    assert np.array_equal(np.signbit(got[:2]), [False, True]) and np.array_equal(got[2:4], [1, -1])
    assert np.isnan(got[4]) and got[5] > 0 and np.array_equal(got[6:], [1, -1])


def test_erf_bound_catches_a_polynomial_past_its_interval(kernel, tmp_path, monkeypatch):
    edits = [('a >= 1.f ? 1.f - q', 'a >= 1.25f ? 1.f - q')]
    assert erf_ulps(tmp_path, monkeypatch, edits) > ERF_ULPS
    x = np.linspace(-3, 3, 60001).astype(np.float32)
    assert rel_err(erf_of(x, tmp_path, monkeypatch, edits), erf(x.astype(np.float64))) < FP32_BOUND
