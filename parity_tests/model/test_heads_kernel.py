"""The head-moving kernel (``mindspore_tnt.heads``) against MindSpore's transposes, bit for bit.

``split_heads`` and ``merge_heads`` on the kernel give the bits of their transpose-and-unstack
path, forward and every input gradient, in both modes, on TNT-S's outer attention, a short
sequence and ragged shapes; so do TNT (at 160 px, where its outer attention moves heads) and
PyramidTNT models with and without it. A kernel that moves one head to the wrong place, or whose
gradient swaps q and k, must fail the same comparisons. An fp16 input (AMP) and a machine without
a compiler take the transposes.
"""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import mindspore_tnt
from mindspore_tnt import heads
from mindspore_tnt.heads import merge_heads, split_heads
from parity.forward import set_mode
from parity_tests.helpers import (BackwardOf, check_model_falls_back, faulty_kernel_library, plant_kernel_faults,
                                   require_cpu_kernels)
from tnt_common.fixtures import make_batch

# (B, L, heads, d): TNT-S's outer attention at batch 2, a short sequence of 2 heads of 32, ragged
SHAPES = [(2, 197, 6, 64), (2, 16, 2, 32), (3, 5, 3, 4), (1, 1, 1, 1)]


@pytest.fixture(scope='module')
def kernel():
    require_cpu_kernels()
    return heads.kernel_ops()


class Moves(nn.Cell):
    """split, swap and merge on ``kernel`` (None: the transposes), weighted into one scalar."""

    def __init__(self, kernel, num_heads, weights):
        super().__init__()
        self.kernel, self.num_heads, self.weights = kernel, num_heads, weights

    def construct(self, qk, v):
        q, k = split_heads(self.kernel, qk, 2, self.num_heads)
        v = split_heads(self.kernel, v, 1, self.num_heads)
        out = merge_heads(self.kernel, q * 2. + k * v)
        return ((q * self.weights[0]).sum() + (k * self.weights[1]).sum() + (v * self.weights[2]).sum()
                + (out * self.weights[3]).sum()), q, k, v, out


def results(kernel, shape, seed=0):
    """(q, k, v, merged, d qk, d v) of ``Moves`` on random inputs of ``shape``."""
    B, L, H, d = shape
    rng = np.random.default_rng(seed)
    qk, v = (ms.Tensor(rng.standard_normal((B, L, n * H * d)).astype(np.float32)) for n in (2, 1))
    weights = [ms.Tensor(rng.standard_normal(s).astype(np.float32)) for s in [(B, H, L, d)] * 3 + [(B, L, H * d)]]
    (_, *outs), grads = ms.value_and_grad(Moves(kernel, H, weights), grad_position=(0, 1), has_aux=True)(qk, v)
    return [t.asnumpy() for t in (*outs, *grads)]


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
@pytest.mark.parametrize('shape', SHAPES)
def test_same_bits_as_the_transposes(kernel, mode, shape):
    set_mode(mode)
    for got, want in zip(results(kernel, shape), results(None, shape)):
        assert np.array_equal(got, want)


FAULTS = {
    'a head moved to the next one': ('+ k % s.heads) * s.len', '+ (k + 1) % s.heads) * s.len'),
    'q and k swapped in the gradient': ('float *ys[2] = {const_cast<float *>(tnt_cpu::in(params, 0)), '
                                        'const_cast<float *>(tnt_cpu::in(params, 1))};',
                                        'float *ys[2] = {const_cast<float *>(tnt_cpu::in(params, 1)), '
                                        'const_cast<float *>(tnt_cpu::in(params, 0))};'),
}
plant_kernel_faults('heads_cpu.cc', *([edit] for edit in FAULTS.values()))


@pytest.mark.parametrize('fault', FAULTS)
def test_catches_planted_kernel_faults(kernel, fault):
    set_mode('pynative')
    bad = heads._ops(faulty_kernel_library('heads_cpu.cc', [FAULTS[fault]]))
    shape = SHAPES[0]
    want = results(None, shape)
    assert all(np.array_equal(g, w) for g, w in zip(results(kernel, shape), want))
    assert not all(np.array_equal(g, w) for g, w in zip(results(bad, shape), want))


# TNT-tiny at 160 px: 101 sentences, over the inner attention kernel's length, so its outer attention moves
# heads; PyramidTNT's outer attention (with relative_pos) always does: one block per stage has every
# stage's attention (spatial reductions 4, 2, 1, 1; 16x16 to 1x1 tokens), compiled in less time than 2, 7, 1, 1
MODELS = [('tnt_tiny_patch16_64', 160), ('ptnt_tiny_patch16_64', 64)]
KWARGS = {'ptnt_tiny_patch16_64': dict(depths=(1, 1, 1, 1))}


def model_run(name, img_size, moves):
    """(loss, every gradient) of a training-mode model of seed 0, its heads moved by ``moves``."""
    ms.set_seed(0)
    net = mindspore_tnt.create_model(name, img_size=img_size, **KWARGS.get(name, {}))
    cells = [c for _, c in net.cells_and_names() if hasattr(c, 'head_moves')]
    assert cells and all(c.head_moves is heads.kernel_ops() for c in cells)
    for cell in cells:
        cell.head_moves = moves
    net.set_train(True)
    dout = np.random.default_rng(3).standard_normal((2, 1000)).astype(np.float32)
    loss, grads = ms.value_and_grad(BackwardOf(net, dout), None, net.trainable_params())(
        ms.Tensor(make_batch(2, img_size, seed=1)))
    return [loss.asnumpy()] + [g.asnumpy() for g in grads]


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
@pytest.mark.parametrize('name,img_size', MODELS)
def test_models_same_bits_with_and_without_it(kernel, mode, name, img_size):
    set_mode(mode)
    assert all(np.array_equal(a, b) for a, b in zip(model_run(name, img_size, kernel),
                                                      model_run(name, img_size, None)))


@pytest.mark.parametrize('name,img_size', MODELS)
def test_model_comparison_catches_a_head_moved(kernel, name, img_size):
    set_mode('pynative')
    edits = [FAULTS['a head moved to the next one']]
    bad = heads._ops(faulty_kernel_library('heads_cpu.cc', edits))
    assert not all(np.array_equal(a, b) for a, b in zip(model_run(name, img_size, bad),
                                                          model_run(name, img_size, None)))


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
def test_fp16_takes_the_transposes(kernel, mode):
    set_mode(mode)
    x = ms.Tensor(np.random.default_rng(2).standard_normal((2, 7, 2 * 3 * 4)).astype(np.float16))
    for got, want in zip(split_heads(kernel, x, 2, 3), split_heads(None, x, 2, 3)):
        assert got.dtype == ms.float16 and np.array_equal(got.asnumpy(), want.asnumpy())


def test_falls_back_to_the_transposes(monkeypatch):
    check_model_falls_back(monkeypatch, heads, 'Transpose', 'head_moves')
