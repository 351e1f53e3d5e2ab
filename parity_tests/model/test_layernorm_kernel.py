"""The CPU LayerNorm kernel (``mindspore_tnt.layernorm``) against float64 numerics, torch and nn.LayerNorm.

Forward: within FP32_BOUND of the exact (float64) LayerNorm, with non-unit gamma and beta,
every eps of the numerics presets, and rows with a mean of 1e3 and a spread of 1e-1 (where a
one-pass ``E[x^2] - E[x]^2`` in float32 loses every digit; torch's float32 result itself is
off by ~2e-3 there, so those rows are judged against float64 only). Gradients (dx, dgamma,
dbeta): within GRAD_BOUND of torch.autograd in float64. A kernel built with eps outside the
square root, or with the unbiased variance, must fail the same checks. Without the kernel
the layer is ``nn.LayerNorm`` itself, bit for bit.
"""
import mindspore as ms
import numpy as np
import pytest
import torch

from mindspore_tnt import layernorm
from parity.forward import set_mode
from parity.gradients import GRAD_BOUND
from parity_tests.helpers import BackwardOf, faulty_kernel_library, plant_kernel_faults, require_cpu_kernels, without_compiler
from tnt_common.compare import FP32_BOUND, rel_err
from tnt_common.numerics import PRESETS, PYTORCH

EPS = sorted({PYTORCH.norm_eps, 1e-6} | {e for p in PRESETS.values() for e in (p.norm_eps, p.final_norm_eps)})
SHAPES = [(2, 5, 96), (3, 384), (4, 97), (1, 1, 24)]


def inputs(shape, offset=0., scale=1., seed=0):
    rng = np.random.default_rng(seed)
    n = shape[-1]
    x = (rng.standard_normal(shape) * scale + offset).astype(np.float32)
    gamma = (1 + 0.5 * rng.standard_normal(n)).astype(np.float32)
    beta = (0.3 * rng.standard_normal(n)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    return x, gamma, beta, dy


def exact(x, gamma, beta, eps):
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def torch_grads(x, gamma, beta, dy, eps):
    tx, tg, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, gamma, beta))
    torch.nn.functional.layer_norm(tx, (x.shape[-1],), tg, tb, eps).backward(torch.tensor(dy, dtype=torch.float64))
    return [t.grad.numpy() for t in (tx, tg, tb)]


def layer(kernel, gamma, beta, eps):
    net = layernorm.LayerNorm((gamma.size,), epsilon=eps, cpu_kernel=True)
    net.kernel = kernel
    net.gamma.set_data(ms.Tensor(gamma))
    net.beta.set_data(ms.Tensor(beta))
    return net


def forward_error(kernel, x, gamma, beta, eps):
    return rel_err(layer(kernel, gamma, beta, eps)(ms.Tensor(x)).asnumpy(), exact(x, gamma, beta, eps))


def gradient_errors(kernel, x, gamma, beta, dy, eps):
    net = layer(kernel, gamma, beta, eps)
    grad = ms.value_and_grad(BackwardOf(net, dy), grad_position=0, weights=net.trainable_params())
    _, (dx, (dgamma, dbeta)) = grad(ms.Tensor(x))
    got = (dx.asnumpy(), dgamma.asnumpy(), dbeta.asnumpy())
    return [rel_err(g, w) for g, w in zip(got, torch_grads(x, gamma, beta, dy, eps))]


@pytest.fixture(scope='module')
def kernel():
    require_cpu_kernels()
    return layernorm.kernel_ops()


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('eps', EPS)
def test_forward_matches_exact_and_torch(kernel, shape, eps):
    set_mode('pynative')
    x, gamma, beta, _ = inputs(shape)
    y = layer(kernel, gamma, beta, eps)(ms.Tensor(x)).asnumpy()
    assert rel_err(y, exact(x, gamma, beta, eps)) < FP32_BOUND
    want = torch.nn.functional.layer_norm(torch.tensor(x), (shape[-1],), torch.tensor(gamma), torch.tensor(beta), eps)
    assert rel_err(y, want.numpy()) < FP32_BOUND


@pytest.mark.parametrize('eps', EPS)
def test_large_mean_small_spread_keeps_its_digits(kernel, mode, eps):
    x, gamma, beta, _ = inputs((16, 384), offset=1e3, scale=1e-1)
    assert forward_error(kernel, x, gamma, beta, eps) < FP32_BOUND


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('eps', [1e-5, 1e-6])
def test_gradients_match_torch_autograd(kernel, mode, shape, eps):
    x, gamma, beta, dy = inputs(shape, seed=1)
    assert max(gradient_errors(kernel, x, gamma, beta, dy, eps)) < GRAD_BOUND


def test_gradients_with_a_large_mean(kernel):
    set_mode('pynative')
    x, gamma, beta, dy = inputs((8, 96), offset=1e3, scale=1e-1, seed=2)
    assert max(gradient_errors(kernel, x, gamma, beta, dy, 1e-5)) < GRAD_BOUND


def test_matches_nn_layernorm(kernel):
    set_mode('graph')
    x, gamma, beta, _ = inputs((2, 5, 96), seed=3)
    ref = ms.nn.LayerNorm((96,), epsilon=1e-5)
    ref.gamma.set_data(ms.Tensor(gamma))
    ref.beta.set_data(ms.Tensor(beta))
    y = layer(kernel, gamma, beta, 1e-5)(ms.Tensor(x)).asnumpy()
    assert rel_err(y, ref(ms.Tensor(x)).asnumpy()) < FP32_BOUND


def faulty_kernel(old, new):
    """The kernel built from its source with ``old`` replaced by ``new``."""
    return layernorm._layernorm_ops(faulty_kernel_library('layernorm_cpu.cc', [(old, new)]))


FAULTS = {
    'eps outside the square root': ('1.0 / std::sqrt(var + static_cast<double>(eps))',
                                    '1.0 / (std::sqrt(var) + static_cast<double>(eps))'),
    'unbiased variance': ('const double var = sq[j] / dn;',
                          'const double var = sq[j] / (dn - 1.0);'),
}
plant_kernel_faults('layernorm_cpu.cc', *([edit] for edit in FAULTS.values()))


@pytest.mark.parametrize('fault', FAULTS)
def test_catches_planted_kernel_faults(kernel, fault):
    set_mode('pynative')
    bad = faulty_kernel(*FAULTS[fault])
    x, gamma, beta, dy = inputs((16, 96), scale=1e-1, seed=4)
    assert forward_error(kernel, x, gamma, beta, 1e-5) < FP32_BOUND
    assert forward_error(bad, x, gamma, beta, 1e-5) > FP32_BOUND
    assert max(gradient_errors(bad, x, gamma, beta, dy, 1e-5)) > GRAD_BOUND


def test_falls_back_to_nn_layernorm(monkeypatch):
    with without_compiler(monkeypatch, layernorm, 'LayerNorm'):
        set_mode('pynative')
        x, gamma, beta, _ = inputs((3, 96), seed=5)
        net = layernorm.LayerNorm((96,), epsilon=1e-5, cpu_kernel=True)
        ref = ms.nn.LayerNorm((96,), epsilon=1e-5)
        for cell in (net, ref):
            cell.gamma.set_data(ms.Tensor(gamma))
            cell.beta.set_data(ms.Tensor(beta))
        assert net.kernel is None
        assert np.array_equal(net(ms.Tensor(x)).asnumpy(), ref(ms.Tensor(x)).asnumpy())


def test_fp16_and_multi_axis_fall_back(kernel):
    set_mode('pynative')
    assert layernorm.LayerNorm((4, 96), PYTORCH.norm_eps, cpu_kernel=True).kernel is None
    x, gamma, beta, _ = inputs((3, 96), seed=6)
    net = layer(kernel, gamma, beta, 1e-5)
    ref = ms.nn.LayerNorm((96,), epsilon=1e-5)
    ref.gamma.set_data(ms.Tensor(gamma))
    ref.beta.set_data(ms.Tensor(beta))
    x16 = ms.Tensor(x, ms.float16)
    assert np.array_equal(net(x16).asnumpy(), ref(x16).asnumpy())


def test_parameter_names_are_nn_layernorms():
    net = layernorm.LayerNorm((96,), epsilon=1e-5, cpu_kernel=True)
    assert isinstance(net, ms.nn.LayerNorm)
    assert sorted(p.name for p in net.get_parameters()) == ['beta', 'gamma']
