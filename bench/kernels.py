"""Micro-benchmark of the CPU kernels on TNT-S batch-8 shapes, MindSpore GRAPH mode.

``python -m bench.kernels [--repeat 30]`` times, per shape, the scaled softmax kernel
(``mindspore_tnt.softmax``) against ``ops.softmax(x * scale)`` and the LayerNorm kernel
(``mindspore_tnt.layernorm``), forward and forward+backward, and prints the median and the
quartiles of ``repeat`` runs in ms (after warm-up; the cells compared run in turn).
"""
import time

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from mindspore_tnt import layernorm, softmax
from tnt_common.cli import parser

SOFTMAX_SHAPES = {'outer (8,6,197,197)': ((8, 6, 197, 197), 64 ** -0.5),
                  'inner (1568,4,16,16)': ((1568, 4, 16, 16), 6 ** -0.5)}
LAYERNORM_SHAPES = {'inner (25088,24)': (25088, 24), 'outer (1576,384)': (1576, 384),
                    'proj (1568,384)': (1568, 384)}


class ScaledSoftmax(nn.Cell):
    """MindSpore's ``ops.softmax(x * scale, axis=-1)``."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def construct(self, x):
        return ops.softmax(x * self.scale, axis=-1)


class Backward(nn.Cell):
    """The gradient of ``sum(net(x) * dy)`` with respect to x: one forward and one backward."""

    def __init__(self, net, dy):
        super().__init__()
        self.net = net
        self.dy = dy
        self.grad = ops.GradOperation()

    def construct(self, x):
        return self.grad(lambda t: (self.net(t) * self.dy).sum())(x)


def medians(cells, x, repeat):
    """``{name: (median, first quartile, third quartile)}`` in ms of ``repeat`` runs of each
    ``cells[name](x)``, after warm-up, taken in turn so that every cell sees the same load."""
    times = {name: [] for name in cells}
    for cell in cells.values():
        for _ in range(3):
            cell(x).asnumpy()
    for _ in range(repeat):
        for name, cell in cells.items():
            start = time.perf_counter()
            cell(x).asnumpy()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: tuple(np.percentile(t, (50, 25, 75))) for name, t in times.items()}


def report(cells, x, repeat):
    for name, (median, q1, q3) in medians(cells, x, repeat).items():
        print(f'{name:<52} {median:8.3f} ms  [{q1:.3f}, {q3:.3f}]', flush=True)


def main(argv=None):
    p = parser('python -m bench.kernels', __doc__)
    p.add_argument('--repeat', type=int, default=30)
    p.add_argument('--only', choices=('softmax', 'layernorm'))
    args = p.parse_args(argv)
    ms.set_device('CPU')
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    if args.only != 'layernorm':
        for label, (shape, scale) in SOFTMAX_SHAPES.items():
            x = ms.Tensor(rng.standard_normal(shape).astype(np.float32) * 4)
            dy = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
            kernel, ref = softmax.ScaledSoftmax(scale, cpu_kernel=True), ScaledSoftmax(scale)
            report({f'softmax {label} kernel fwd': kernel, f'softmax {label} ops.softmax(x*scale) fwd': ref},
                   x, args.repeat)
            report({f'softmax {label} kernel fwd+bwd': Backward(kernel, dy),
                    f'softmax {label} ops.softmax(x*scale) fwd+bwd': Backward(ref, dy)}, x, args.repeat)
    if args.only != 'softmax':
        for label, shape in LAYERNORM_SHAPES.items():
            x = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
            dy = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
            net = layernorm.LayerNorm((shape[-1],), epsilon=1e-6, cpu_kernel=True)
            report({f'layernorm {label} fwd': net, f'layernorm {label} fwd+bwd': Backward(net, dy)}, x, args.repeat)

if __name__ == '__main__':
    main()
