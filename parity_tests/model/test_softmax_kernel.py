"""The CPU scaled-softmax kernel (``mindspore_tnt.softmax``) against float64 numerics and torch.

Shapes are TNT's attention scores: inner (..., 16, 16) and outer (..., 197, 197), with the
scales of their head dims. Forward: within FP32_BOUND of the exact softmax of the float32
product x * scale (what ``attn * scale`` hands the softmax) and of torch's float32
``softmax(x * scale)``, also for rows offset by +-1e4 (only the max subtraction keeps exp
finite there). Gradient: within GRAD_BOUND of torch.autograd in float64 and float32.
A kernel that scales after the softmax, skips the max subtraction, or whose backward
misses the scale or the row sum must fail the same checks. Without the kernel the cell is
``ops.softmax(x * scale, axis=-1)`` bit for bit. Results do not depend on the number of
threads (``TNT_CPU_THREADS``), nor do the LayerNorm kernel's parameter gradients.
"""
import os
import subprocess
import sys
import warnings

import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import ops

from mindspore_tnt import cpu_kernels, softmax
from parity.forward import set_mode
from parity.gradients import GRAD_BOUND
from parity_tests.helpers import require_cpu_kernels
from tnt_common.compare import FP32_BOUND

INNER = ((6, 4, 16, 16), 6 ** -0.5)      # TNT-S inner attention: head dim 24 / 4
OUTER = ((2, 6, 197, 197), 64 ** -0.5)   # TNT-S outer attention: head dim 384 / 6
CASES = {'inner': INNER, 'outer': OUTER, 'tnt-b inner': ((3, 4, 16, 16), 10 ** -0.5)}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def inputs(shape, offset=0., seed=0):
    """Scores N(0, 3) plus, per row, +-``offset``; and an output gradient dy."""
    rng = np.random.default_rng(seed)
    shift = offset * rng.choice([-1., 1.], shape[:-1] + (1,))
    x = (rng.standard_normal(shape) * 3 + shift).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    return x, dy


def exact(x, scale):
    """softmax in float64 of the float32 product x * scale."""
    v = (x * np.float32(scale)).astype(np.float64)
    e = np.exp(v - v.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def exact_gradient(x, dy, scale):
    """The float64 gradient of ``exact``: scale * y * (dy - sum(dy * y))."""
    y = exact(x, scale)
    return scale * y * (dy - (dy * y).sum(-1, keepdims=True))


def torch_softmax_and_grad(x, dy, scale, dtype):
    tx = torch.tensor(x, dtype=dtype, requires_grad=True)
    y = torch.softmax(tx * scale, dim=-1)
    y.backward(torch.tensor(dy, dtype=dtype))
    return y.detach().numpy(), tx.grad.numpy()


def relative_error(got, want):
    if not np.all(np.isfinite(got)):
        return float('inf')
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def cell(kernel, scale):
    net = softmax.ScaledSoftmax(scale, cpu_kernel=True)
    net.kernel = kernel
    return net


def forward(kernel, x, scale):
    return cell(kernel, scale)(ms.Tensor(x)).asnumpy()


class Loss(ms.nn.Cell):
    """sum(net(x) * dy): its gradient is the cell's backward of ``dy``."""

    def __init__(self, net, dy):
        super().__init__()
        self.net = net
        self.dy = ms.Tensor(dy)

    def construct(self, x):
        return (self.net(x) * self.dy).sum()


def gradient(kernel, x, dy, scale):
    return ms.grad(Loss(cell(kernel, scale), dy))(ms.Tensor(x)).asnumpy()


@pytest.fixture(scope='module')
def kernel():
    require_cpu_kernels()
    return softmax.kernel_ops()


@pytest.fixture(params=['pynative', 'graph'])
def mode(request):
    set_mode(request.param)
    return request.param


@pytest.mark.parametrize('case', CASES)
def test_forward_matches_exact_and_torch(kernel, mode, case):
    shape, scale = CASES[case]
    x, dy = inputs(shape)
    y = forward(kernel, x, scale)
    assert relative_error(y, exact(x, scale)) < FP32_BOUND
    assert relative_error(y, torch_softmax_and_grad(x, dy, scale, torch.float32)[0]) < FP32_BOUND


@pytest.mark.parametrize('case', CASES)
def test_gradient_matches_torch_autograd(kernel, mode, case):
    shape, scale = CASES[case]
    x, dy = inputs(shape, seed=1)
    dx = gradient(kernel, x, dy, scale)
    assert relative_error(dx, torch_softmax_and_grad(x, dy, scale, torch.float64)[1]) < GRAD_BOUND
    assert relative_error(dx, torch_softmax_and_grad(x, dy, scale, torch.float32)[1]) < GRAD_BOUND


@pytest.mark.parametrize('case', ['inner', 'outer'])
def test_large_scores_are_max_subtracted(kernel, case):
    """Rows offset by +-1e4: exp overflows or underflows without the max subtraction. The float32
    product x * scale moves such scores by up to 1e-3 of their spread, so the references are
    the exact softmax of that product and torch's float32 softmax, which computes it too; a
    kernel that skips the product's rounding (x * scale - max fused into an FMA) fails here
    with the inner scale, which is not a power of two."""
    set_mode('pynative')
    shape, scale = CASES[case]
    x, dy = inputs(shape, offset=1e4, seed=2)
    y, dx = forward(kernel, x, scale), gradient(kernel, x, dy, scale)
    assert relative_error(y, exact(x, scale)) < FP32_BOUND
    assert relative_error(dx, exact_gradient(x, dy, scale)) < GRAD_BOUND
    want = torch_softmax_and_grad(x, dy, scale, torch.float32)
    assert relative_error(y, want[0]) < FP32_BOUND
    assert relative_error(dx, want[1]) < GRAD_BOUND


def test_matches_ops_softmax(kernel):
    set_mode('graph')
    shape, scale = OUTER
    x, _ = inputs(shape, seed=3)
    y = forward(kernel, x, scale)
    assert relative_error(y, ops.softmax(ms.Tensor(x) * scale, axis=-1).asnumpy()) < FP32_BOUND


def faulty_kernel(tmp_path, monkeypatch, replacements):
    """The kernel built from its source with each (old, new) of ``replacements`` made."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    with open(f'{cpu_kernels.HERE}/softmax_cpu.cc') as f:
        text = f.read()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    source = tmp_path / 'softmax_faulty.cc'
    source.write_text(text)
    return softmax._softmax_ops(cpu_kernels.build(str(source), 'g++'))


FORWARD_FAULTS = {
    'scale after the softmax': [('yr[i] = xr[i] * scale;', 'yr[i] = xr[i];'),
                                ('yr[i] *= inv;', 'yr[i] *= inv * scale;')],
    'no max subtraction': [('expf(yr[i] - vmax)', 'expf(yr[i])')],
}
BACKWARD_FAULTS = {
    'backward without the scale': [('(yr[i] * (dyr[i] - s)) * scale', 'yr[i] * (dyr[i] - s)')],
    'backward without the row sum': [('(yr[i] * (dyr[i] - s)) * scale', '(yr[i] * dyr[i]) * scale')],
}


@pytest.mark.parametrize('fault', FORWARD_FAULTS)
@pytest.mark.parametrize('case', ['inner', 'outer'])
def test_catches_planted_forward_faults(kernel, tmp_path, monkeypatch, fault, case):
    set_mode('pynative')
    bad = faulty_kernel(tmp_path, monkeypatch, FORWARD_FAULTS[fault])
    shape, scale = CASES[case]
    x, _ = inputs(shape, offset=1e4 if fault == 'no max subtraction' else 0., seed=4)
    assert relative_error(forward(kernel, x, scale), exact(x, scale)) < FP32_BOUND
    assert relative_error(forward(bad, x, scale), exact(x, scale)) > FP32_BOUND


@pytest.mark.parametrize('fault', BACKWARD_FAULTS)
@pytest.mark.parametrize('case', ['inner', 'outer'])
def test_catches_planted_backward_faults(kernel, tmp_path, monkeypatch, fault, case):
    set_mode('pynative')
    bad = faulty_kernel(tmp_path, monkeypatch, BACKWARD_FAULTS[fault])
    shape, scale = CASES[case]
    x, dy = inputs(shape, seed=5)
    want = torch_softmax_and_grad(x, dy, scale, torch.float64)[1]
    assert relative_error(gradient(kernel, x, dy, scale), want) < GRAD_BOUND
    assert relative_error(gradient(bad, x, dy, scale), want) > GRAD_BOUND


def test_falls_back_to_ops_softmax(monkeypatch):
    monkeypatch.setenv('CXX', '/nonexistent/c++')
    softmax.kernel_ops.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="using MindSpore's softmax"):
            assert softmax.kernel_ops() is None
        set_mode('pynative')
        shape, scale = INNER
        x = ms.Tensor(inputs(shape, seed=6)[0])
        net = softmax.ScaledSoftmax(scale, cpu_kernel=True)
        assert net.kernel is None
        assert np.array_equal(net(x).asnumpy(), ops.softmax(x * scale, axis=-1).asnumpy())
    finally:
        monkeypatch.undo()
        softmax.kernel_ops.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        if softmax.kernel_ops() is None:
            pytest.skip('the CPU softmax kernel does not build here')


def test_fp16_falls_back(kernel):
    set_mode('pynative')
    shape, scale = INNER
    x16 = ms.Tensor(inputs(shape, seed=7)[0], ms.float16)
    assert np.array_equal(cell(kernel, scale)(x16).asnumpy(), ops.softmax(x16 * scale, axis=-1).asnumpy())


THREADS_SCRIPT = """
import sys
import mindspore as ms
import numpy as np
from mindspore_tnt import layernorm, softmax
ms.set_device('CPU')
rng = np.random.default_rng(0)
x, dy = (ms.Tensor(rng.standard_normal((1568, 4, 16, 16)).astype(np.float32) * 3) for _ in range(2))
rows, dy_rows = (ms.Tensor(rng.standard_normal((3000, 384)).astype(np.float32)) for _ in range(2))
net = softmax.ScaledSoftmax(6 ** -0.5, cpu_kernel=True)
norm = layernorm.LayerNorm((384,), epsilon=1e-6, cpu_kernel=True)
assert net.kernel is not None and norm.kernel is not None
grad = ms.value_and_grad(lambda t: (norm(t) * dy_rows).sum(), grad_position=0, weights=norm.trainable_params())
_, (dx, (dgamma, dbeta)) = grad(rows)
out = [net(x), ms.grad(lambda t: (net(t) * dy).sum())(x), dx, dgamma, dbeta]
np.savez(sys.argv[1], *[t.asnumpy() for t in out])
"""


def test_results_do_not_depend_on_the_thread_count(kernel, tmp_path):
    """The softmax and LayerNorm kernels (forward, dx, dgamma, dbeta) give the same bits on 1, 2 or 3 threads."""
    results = []
    for threads in (1, 2, 3):
        path = tmp_path / f'threads{threads}.npz'
        env = dict(os.environ, TNT_CPU_THREADS=str(threads), PYTHONPATH=ROOT)
        subprocess.run([sys.executable, '-c', THREADS_SCRIPT, str(path)], env=env, cwd=ROOT, check=True,
                       capture_output=True)
        with np.load(path) as f:
            results.append([f[k] for k in sorted(f.files)])
    for other in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(results[0], other))
