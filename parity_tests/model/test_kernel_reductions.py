"""The kernels that sum: the square-sum kernel of the gradient norm against float64, and the
same bits for any thread count from every kernel with a reduction (LayerNorm's dgamma/dbeta,
the bias gradient, the square sum, the attention's gradient, the softmax) or a vector-math call
(the GELU's erf and exp, remainders of the vector lanes included).

``mindspore_tnt.square_sum``: within FP32_BOUND of the float64 sum of squares, on gradient
shapes of TNT-S and ragged ones; a kernel that drops its last block must fail the same
bound; ``TrainStep``'s gradient norm with the kernel equals the one of MindSpore's ops
within FP32_BOUND.
"""
import sys

import mindspore as ms
import numpy as np
import pytest

from mindspore_tnt import square_sum
from parity.forward import set_mode
from parity_tests.helpers import Command, faulty_kernel_library, plant_kernel_faults, require_cpu_kernels, started
from tnt_common.compare import FP32_BOUND, rel_err

SHAPES = [(384, 1536), (1536,), (24, 3, 7, 7), (1,), (3, 5, 7), (16385,)]


@pytest.fixture(scope='module')
def kernel():
    require_cpu_kernels()
    return square_sum.kernel_ops()


@pytest.mark.parametrize('shape', SHAPES)
def test_square_sum_matches_float64(kernel, shape):
    set_mode('pynative')
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3 + 1
    got = float(kernel(ms.Tensor(x)).asnumpy()[0])
    assert rel_err(got, (x.astype(np.float64) ** 2).sum()) < FP32_BOUND


DROPPED_BLOCK = ('for (int64_t k = 0; k < blocks; ++k) total +=', 'for (int64_t k = 1; k < blocks; ++k) total +=')
plant_kernel_faults('square_sum_cpu.cc', [DROPPED_BLOCK])


def test_catches_a_dropped_block(kernel):
    set_mode('pynative')
    bad = square_sum.square_sum_op(faulty_kernel_library('square_sum_cpu.cc', [DROPPED_BLOCK]))
    x = np.random.default_rng(1).standard_normal((384, 1536)).astype(np.float32)
    want = (x.astype(np.float64) ** 2).sum()
    assert rel_err(float(kernel(ms.Tensor(x)).asnumpy()[0]), want) < FP32_BOUND
    assert rel_err(float(bad(ms.Tensor(x)).asnumpy()[0]), want) > FP32_BOUND


def test_train_step_gradient_norm_with_and_without_the_kernel(kernel, monkeypatch):
    """The compiled step's gradient norm on the kernel equals the one of MindSpore's Square + ReduceSum."""
    import mindspore_tnt
    from tnt_common.fixtures import make_batch
    from tnt_train.optim import create_optimizer
    from tnt_train.train_step import TrainStep
    set_mode('graph')
    images = ms.Tensor(make_batch(2, 64, seed=3))
    targets = ms.Tensor(np.eye(10, dtype=np.float32)[[1, 7]])
    norms = []
    for use in (True, False):
        ms.set_seed(0)
        net = mindspore_tnt.create_model('tnt_tiny_patch16_64', num_classes=10)
        step = TrainStep(net, *create_optimizer(net, [1e-4]))
        if not use:
            step.square_sum_kernel = None
        norms.append(float(step(images, targets)[1].asnumpy()))
    assert rel_err(*norms) < FP32_BOUND


THREADS_SCRIPT = """
import os
import sys
os.environ['TNT_CPU_THREADS'] = sys.argv[1]
import mindspore as ms
import numpy as np
from mindspore_tnt import attention, dense, layernorm, softmax, square_sum
from mindspore_tnt.tnt import Mlp
ms.set_device('CPU')
rng = np.random.default_rng(0)
def t(*shape):
    return ms.Tensor(rng.standard_normal(shape).astype(np.float32))
rows, dy = t(3000, 384), t(3000, 384)
norm = layernorm.LayerNorm((384,), epsilon=1e-6, cpu_kernel=True)
fc = dense.Dense(96, 384, cpu_kernel=True)
att = attention.SmallHeadAttention(4, 6 ** -0.5, cpu_kernel=True)
assert None not in (norm.kernel, fc.kernel, att.kernel, square_sum.kernel_ops())
_, (dx, (dgamma, dbeta)) = ms.value_and_grad(lambda x: (norm(x) * dy).sum(), 0, norm.trainable_params())(rows)
_, (dw, db) = ms.value_and_grad(lambda x: (fc(x) * dy).sum(), None, fc.trainable_params())(t(3000, 96))
qk, v, dout = t(1568, 16, 48), t(1568, 16, 24), t(1568, 16, 24)
da, dv = ms.grad(lambda a, b: (att(a, b) * dout).sum(), (0, 1))(qk, v)
mlp = Mlp(33, 37, impl='cpu')
act, fc1 = mlp.act, mlp.fc1
assert None not in (act.kernel, act.bias_kernel)
fc1.weight.set_data(t(37, 33))
fc1.bias.set_data(t(37))
z, dz, h, dh = t(100003), t(100003), t(2701, 33), t(2701, 37)
dzx = ms.grad(lambda x: (act(x) * dz).sum())(z)
_, (dhx, (dw1, db1)) = ms.value_and_grad(lambda x: (mlp.fc1_act(x) * dh).sum(), 0, fc1.trainable_params())(h)
scores, dp, sm = t(2, 6, 197, 197), t(2, 6, 197, 197), softmax.kernel_ops()
dscores = ms.grad(lambda x: (sm(x) * dp).sum())(scores)
out = [dx, dgamma, dbeta, db, square_sum.kernel_ops()(rows), att(qk, v), da, dv,
       act(z), dzx, mlp.fc1_act(h), dhx, dw1, db1, sm(scores), dscores]
np.savez(sys.argv[2], *[x.asnumpy() for x in out])
"""


def start_commands(tmp_path_factory):
    """``THREADS_SCRIPT`` on 1, 2 and 3 threads: {threads: (its output file, its ``Command``)}."""
    out = tmp_path_factory.mktemp('threads')
    return {n: (out / f'{n}.npz', Command([sys.executable, '-c', THREADS_SCRIPT, n, out / f'{n}.npz']))
            for n in (1, 2, 3)}


def test_results_do_not_depend_on_the_thread_count(kernel, tmp_path_factory):
    """LayerNorm's dx/dgamma/dbeta, the bias gradient, the square sum, the attention, the GELU
    (alone and with fc1's bias inside), the softmax and their gradients give the same bits on 1,
    2 or 3 threads (``TNT_CPU_THREADS``), each a command on every core."""
    results = []
    for path, command in started(start_commands, tmp_path_factory).values():
        command.result()
        with np.load(path) as f:
            results.append([f[k] for k in sorted(f.files)])
    assert len(results[0]) == 16
    for other in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(results[0], other))
