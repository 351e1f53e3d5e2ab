"""The CPU drop-path kernel (``mindspore_tnt.droppath``) against MindSpore's ops, bit for bit.

``DropPath(p, cpu_kernel=True)`` scales each sample's row by ``mask / keep_prob`` in one
custom op; without the kernel it is ``x / keep_prob * mask``. Forward and gradient must be
identical to the ops' (the kernel does the same float operations in the same order), in
GRAPH and PYNATIVE mode, for the inner stream's 3-D rows, 2-D rows and rows of odd width. The
layer fed as the model feeds it in training (noise and keep probability as inputs) computes
what the layer that draws its own noise does, with and without the kernel.
"""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from mindspore_tnt import droppath
from mindspore_tnt.tnt import DropPath
from parity.forward import set_mode
from parity_tests.helpers import require_cpu_kernels

SHAPES = [(392, 16, 24), (8, 197, 384), (7, 13), (5, 3, 1, 11)]


KEEP = []   # every cell a test compiled: MindSpore caches graphs by object id, which must not be reused


class Scaled(nn.Cell):
    """sum(DropPath(x) * weights): its gradient is the drop path's gradient of ``weights``."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def construct(self, x, weights):
        return (self.layer(x) * weights).sum()


class Grad(nn.Cell):
    def __init__(self, layer):
        super().__init__()
        self.scaled = Scaled(layer)
        self.grad = ms.grad(self.scaled)

    def construct(self, x, weights):
        return self.grad(x, weights)


def run(layer, x, weights, noise):
    layer.noise = lambda shape, dtype: noise.reshape(shape).astype(dtype)
    layer.set_train(True)
    grad = Grad(layer)
    KEEP.append((layer, grad))
    return layer(x).asnumpy(), grad(x, weights).asnumpy()


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('drop_prob', [0.1, 0.5, 0.0909])
def test_kernel_matches_ops_bit_for_bit(mode, shape, drop_prob):
    require_cpu_kernels()
    set_mode(mode)
    rng = np.random.default_rng(len(shape) + int(drop_prob * 100))
    x = ms.Tensor((rng.standard_normal(shape) * 3).astype(np.float32))
    weights = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    noise = rng.random(shape[0]).astype(np.float32)
    noise[:2] = 0, np.nextafter(np.float32(1), np.float32(0))   # one sample dropped, one kept, at every rate
    noise = ms.Tensor(noise)
    with_kernel, with_ops = DropPath(drop_prob, cpu_kernel=True), DropPath(drop_prob)
    assert with_kernel.kernel is not None and with_ops.kernel is None
    got, want = run(with_kernel, x, weights, noise), run(with_ops, x, weights, noise)
    for a, b in zip(got, want):
        assert np.array_equal(a, b), float(np.abs(a - b).max())
    assert np.all(got[0][0] == 0)
    assert np.allclose(got[0][1], x.asnumpy()[1] / (1 - drop_prob), rtol=1e-6, atol=0)


def test_kernel_is_not_used_without_drop_or_for_fp16():
    require_cpu_kernels()
    assert DropPath(0., cpu_kernel=True).kernel is None
    set_mode('pynative')
    layer = DropPath(0.5, cpu_kernel=True)
    layer.set_train(True)
    out = layer(ops.ones((64, 3), ms.float16)).asnumpy()
    assert out.dtype == np.float16 and set(np.unique(out)) <= {0., 2.}
    assert droppath.kernel_ops() is layer.kernel


class Fed(nn.Cell):
    """``layer`` fed as the model feeds it in training (``DropPath.feed``): ``noise`` behind
    ``start`` other values, and its keep probability."""

    def __init__(self, layer, noise, start):
        super().__init__()
        layer.feed()
        self.layer, self.start, self.keep = layer, start, layer.keep
        self.fed_noise = ms.Tensor(np.concatenate([np.full(start, 0.99, np.float32), noise.asnumpy().reshape(-1)]))

    def construct(self, x):
        return self.layer(x, self.fed_noise, self.keep, self.start)


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
@pytest.mark.parametrize('cpu_kernel', [True, False])
def test_fed_layer_computes_what_the_drawing_layer_does(mode, cpu_kernel):
    if cpu_kernel:
        require_cpu_kernels()
    set_mode(mode)
    shape, drop_prob, rng = SHAPES[0], 0.3, np.random.default_rng(1)
    x = ms.Tensor((rng.standard_normal(shape) * 3).astype(np.float32))
    weights = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    noise = ms.Tensor(rng.random(shape[0]).astype(np.float32))
    fed = Fed(DropPath(drop_prob, cpu_kernel=cpu_kernel), noise, start=5)
    got, want = run(fed, x, weights, noise), run(DropPath(drop_prob, cpu_kernel=cpu_kernel), x, weights, noise)
    assert (fed.layer.kernel is not None) == cpu_kernel
    assert np.any(np.floor(noise.asnumpy() + 1 - drop_prob) == 0)      # rows the 0.99s ahead would keep
    for a, b in zip(got, want):
        assert np.array_equal(a, b), float(np.abs(a - b).max())
