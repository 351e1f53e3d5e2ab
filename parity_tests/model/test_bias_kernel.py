"""The CPU bias-add kernel (``mindspore_tnt.dense``) against float64 numerics, torch and nn.Dense.

Forward: ``Dense(cpu_kernel=True)`` within FP32_BOUND of the float64 ``x Wᵀ + b`` and of
``nn.Dense`` on the MLP shapes of TNT-S (inner and outer fc1/fc2) and ragged ones; the bias
gradient within GRAD_BOUND of torch.autograd in float64, including rows whose sum cancels
(a large offset of alternating sign). A kernel that drops the last row block from the bias
gradient, or adds the bias to the wrong column, must fail the same checks. Under AMP (fp16
matmul output) the layer is ``nn.Dense``'s bias add, bit for bit.
"""
import mindspore as ms
import numpy as np
import pytest
import torch

from mindspore_tnt import dense
from parity.forward import set_mode
from parity.gradients import GRAD_BOUND
from parity_tests.helpers import BackwardOf, faulty_kernel_library, plant_kernel_faults, require_cpu_kernels, without_compiler
from tnt_common.compare import FP32_BOUND, rel_err

# (input shape, out features): TNT-S batch 2 inner fc1 / fc2, outer fc1 / fc2, ragged sizes
SHAPES = [((2, 3136, 24), 96), ((2, 3136, 96), 24), ((2, 197, 384), 1536), ((2, 197, 1536), 384),
          ((3, 7), 5), ((1, 1, 4), 1), ((517, 33), 3)]


def inputs(shape, out, seed=0, offset=0.):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal((out, shape[-1])) / np.sqrt(shape[-1])).astype(np.float32)
    b = rng.standard_normal(out).astype(np.float32)
    dy = rng.standard_normal(shape[:-1] + (out,))
    dy += offset * np.where(np.arange(dy.shape[-2] if dy.ndim > 1 else 1) % 2, 1., -1.)[..., None]
    return x, w, b, dy.astype(np.float32)


def layer(kernel, w, b):
    net = dense.Dense(w.shape[1], w.shape[0], cpu_kernel=True)
    net.kernel = kernel
    net.weight.set_data(ms.Tensor(w))
    net.bias.set_data(ms.Tensor(b))
    return net


def errors(kernel, x, w, b, dy):
    """Relative errors of (y, dx, dw, db) against torch in float64."""
    net = layer(kernel, w, b)
    grad = ms.value_and_grad(BackwardOf(net, dy), grad_position=0, weights=net.trainable_params())
    y = net(ms.Tensor(x)).asnumpy()
    _, (dx, (dw, db)) = grad(ms.Tensor(x))
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(torch.tensor(dy, dtype=torch.float64))
    got = (y, dx.asnumpy(), dw.asnumpy(), db.asnumpy())
    want = (ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy())
    return [rel_err(g, t) for g, t in zip(got, want)]


@pytest.fixture(scope='module')
def kernel():
    require_cpu_kernels()
    return dense.kernel_ops()


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
@pytest.mark.parametrize('shape,out', SHAPES)
def test_matches_torch_in_float64(kernel, mode, shape, out):
    set_mode(mode)
    y_err, *grad_errs = errors(kernel, *inputs(shape, out))
    assert y_err < FP32_BOUND
    assert max(grad_errs) < GRAD_BOUND


def test_bias_gradient_of_cancelling_rows(kernel):
    """Rows of dy alternate around +-1e3: the float64 block sums keep what float32 would lose."""
    set_mode('graph')
    x, w, b, dy = inputs((2, 3136, 24), 96, seed=1, offset=1e3)
    assert errors(kernel, x, w, b, dy)[3] < GRAD_BOUND


def test_matches_nn_dense(kernel):
    set_mode('graph')
    x, w, b, _ = inputs((2, 197, 384), 1536, seed=2)
    ref = ms.nn.Dense(384, 1536)
    ref.weight.set_data(ms.Tensor(w))
    ref.bias.set_data(ms.Tensor(b))
    y = layer(kernel, w, b)(ms.Tensor(x)).asnumpy()
    assert rel_err(y, ref(ms.Tensor(x)).asnumpy()) < FP32_BOUND


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
@pytest.mark.parametrize('level', ['auto', 'O3'])
def test_amp_runs_nn_dense_bias_add(kernel, mode, level):
    """An fp16 matmul output never reaches the fp32 kernel: the layer adds its bias as nn.Dense does."""
    set_mode(mode)
    x, w, b, _ = inputs((4, 5, 24), 96, seed=3)
    ref = ms.nn.Dense(24, 96)
    ref.weight.set_data(ms.Tensor(w))
    ref.bias.set_data(ms.Tensor(b))
    outs = [ms.amp.auto_mixed_precision(ms.nn.SequentialCell([net]), level, ms.float16)(ms.Tensor(x)).asnumpy()
            for net in (layer(kernel, w, b), ref)]
    assert np.array_equal(*outs)


FAULTS = {
    'last row block dropped': ('for (int64_t k = 0; k < blocks; ++k) sum +=',
                               'for (int64_t k = 0; k + 1 < blocks; ++k) sum +='),
    'bias shifted by a column': ('yr[c] = xr[c] + b[c];', 'yr[c] = xr[c] + b[(c + 1) % n];'),
}
plant_kernel_faults('bias_cpu.cc', *([edit] for edit in FAULTS.values()))


@pytest.mark.parametrize('fault', FAULTS)
def test_catches_planted_kernel_faults(kernel, fault):
    set_mode('pynative')
    bad = dense._bias_ops(faulty_kernel_library('bias_cpu.cc', [FAULTS[fault]]))
    args = inputs((2, 197, 384), 1536, seed=4)
    y_err, *grad_errs = errors(kernel, *args)
    assert y_err < FP32_BOUND and max(grad_errs) < GRAD_BOUND
    y_err, _, _, db_err = errors(bad, *args)
    assert max(y_err, db_err) > GRAD_BOUND


def test_falls_back_to_nn_dense(monkeypatch):
    with without_compiler(monkeypatch, dense, 'BiasAdd'):
        set_mode('pynative')
        x, w, b, _ = inputs((3, 24), 96, seed=5)
        net = dense.Dense(24, 96, cpu_kernel=True)
        ref = ms.nn.Dense(24, 96)
        for cell in (net, ref):
            cell.weight.set_data(ms.Tensor(w))
            cell.bias.set_data(ms.Tensor(b))
        assert net.kernel is None
        assert np.array_equal(net(ms.Tensor(x)).asnumpy(), ref(ms.Tensor(x)).asnumpy())
