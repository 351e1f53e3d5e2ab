"""GELU, exact (erf) or the tanh approximation; the exact form's CPU path is a vectorised kernel.

MindSpore's CPU GELU evaluates erf one element at a time: on an MLP activation of TNT-S
(25088 x 96 floats) it takes about 25x as long as the vectorised loop of ``gelu_cpu.cc``,
and the forward and backward GELUs were a fifth of the model's CPU time. ``GELU`` with
``cpu_kernel=True`` runs that loop and its gradient as MindSpore AOT custom ops, compiled
on first use with the system C++ compiler against glibc's vector math library and cached
(``cpu_kernels``). Everywhere else -- an
fp16 input (AMP O3), another device, no compiler or vector library, a failed build -- it is
``nn.GELU(approximate=False)`` itself, the formula the kernel computes. The tanh form
(``approximate=True``) is always ``nn.GELU(approximate=True)``.
"""
import functools

import mindspore as ms
from mindspore import nn, ops

from mindspore_tnt import cpu_kernels


def _gelu_ops(path):
    grad = ops.Custom(f'{path}:GeluErfGrad', out_shape=lambda x, dy: x, out_dtype=lambda x, dy: x,
                      func_type='aot')

    def bprop(x, out, dout):
        return (grad(x, dout),)

    return ops.Custom(f'{path}:GeluErf', out_shape=lambda x: x, out_dtype=lambda x: x, func_type='aot',
                      bprop=bprop)


@functools.lru_cache(maxsize=None)
def kernel_ops():
    """The (forward, with its bprop) custom op of the CPU kernel, or None where it cannot run."""
    return cpu_kernels.load('gelu_cpu.cc', 'GELU', _gelu_ops)


class GELU(nn.GELU):
    """``nn.GELU(approximate)``; the exact form with ``cpu_kernel=True`` runs fp32 inputs on the CPU kernel."""

    def __init__(self, approximate=False, cpu_kernel=False):
        super().__init__(approximate=approximate)
        self.kernel = kernel_ops() if cpu_kernel and not approximate else None

    def construct(self, x):
        if self.kernel is None or x.dtype != ms.float32:
            return super().construct(x)
        return self.kernel(x)
