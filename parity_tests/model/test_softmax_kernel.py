"""The CPU softmax kernel (``mindspore_tnt.softmax``) against torch in float64.

Forward within FP32_BOUND and the gradient within GRAD_BOUND of torch.autograd in float64, in
both modes, on TNT-S's outer attention scores, PyramidTNT's reduced keys and ragged rows, with
scores large enough to overflow ``exp`` unless the row maximum is subtracted. A kernel that
does not subtract the maximum, drops a row's last partial lane from its sum, or leaves the
row sum out of the gradient must fail the same checks. An fp16 input (AMP) and a machine
without a compiler take ``ops.softmax``.
"""
import mindspore as ms
import numpy as np
import pytest
import torch

import mindspore_tnt
from mindspore_tnt import softmax
from parity.forward import set_mode
from parity.gradients import GRAD_BOUND
from parity_tests.helpers import (BackwardOf, check_model_falls_back, faulty_kernel_library, plant_kernel_faults,
                                   require_cpu_kernels)
from tnt_common.compare import FP32_BOUND, rel_err

# scores: TNT-S's outer attention at batch 2; 4096 queries over 64 reduced keys (PyramidTNT's first
# stage at 256 px); ragged rows
SHAPES = [(2, 6, 197, 197), (2, 2, 4096, 64), (3, 5, 7), (4, 1)]


@pytest.fixture(scope='module')
def kernel():
    require_cpu_kernels()
    return softmax.kernel_ops()


class Softmax(ms.nn.Cell):
    def __init__(self, kernel):
        super().__init__()
        self.kernel = kernel

    def construct(self, x):
        return softmax.softmax(self.kernel, x)


def errors(kernel, shape, scale=3., seed=0):
    """Relative errors of (y, dx) against torch in float64, on scores of spread ``scale``."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    net = Softmax(kernel)
    y = net(ms.Tensor(x)).asnumpy()
    dx = ms.grad(BackwardOf(net, dy))(ms.Tensor(x)).asnumpy()
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = torch.softmax(tx, -1)
    ty.backward(torch.tensor(dy, dtype=torch.float64))
    return rel_err(y, ty.detach().numpy()), rel_err(dx, tx.grad.numpy())


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
@pytest.mark.parametrize('shape', SHAPES)
def test_matches_torch_in_float64(kernel, mode, shape):
    set_mode(mode)
    y_err, dx_err = errors(kernel, shape)
    assert y_err < FP32_BOUND and dx_err < GRAD_BOUND


def test_large_scores(kernel):
    """Scores of spread 100: exp overflows in float32 unless each row's maximum is subtracted."""
    set_mode('graph')
    y_err, dx_err = errors(kernel, SHAPES[0], scale=100.)
    assert y_err < FP32_BOUND and dx_err < GRAD_BOUND


def test_the_model_uses_it(kernel):
    net = mindspore_tnt.create_model('tnt_tiny_patch16_64', impl='cpu')
    kernels = [c.softmax_kernel for _, c in net.cells_and_names() if hasattr(c, 'softmax_kernel')]
    assert kernels and all(k is kernel for k in kernels)


FAULTS = {
    'maximum not subtracted': ('t[i] = lane[0][i] - m;', 't[i] = lane[0][i];'),
    "a row's partial lane left out of its sum": ('for (; c < n; ++c) s[c % kLanes] +=',
                                                 'for (; c < 0; ++c) s[c % kLanes] +='),
    'row sum left out of the gradient': ('dxr[c] = yr[c] * (dyr[c] - s);', 'dxr[c] = yr[c] * dyr[c];'),
}
plant_kernel_faults('softmax_cpu.cc', *([edit] for edit in FAULTS.values()))


@pytest.mark.parametrize('edit', FAULTS.values(), ids=FAULTS)
def test_catches_planted_kernel_faults(kernel, edit):
    set_mode('pynative')
    bad = softmax._softmax_ops(faulty_kernel_library('softmax_cpu.cc', [edit]))
    assert max(errors(kernel, SHAPES[0], scale=100.)) < GRAD_BOUND
    y_err, dx_err = errors(bad, SHAPES[0], scale=100.)
    assert not (y_err < FP32_BOUND and dx_err < GRAD_BOUND)


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
def test_fp16_takes_ops_softmax(kernel, mode):
    set_mode(mode)
    x = ms.Tensor(np.random.default_rng(2).standard_normal((2, 3, 7, 7)).astype(np.float16))
    got, want = Softmax(kernel)(x), Softmax(None)(x)
    assert got.dtype == ms.float16 and np.array_equal(got.asnumpy(), want.asnumpy())


def test_falls_back_to_ops_softmax(monkeypatch):
    check_model_falls_back(monkeypatch, softmax, 'Softmax', 'softmax_kernel')
