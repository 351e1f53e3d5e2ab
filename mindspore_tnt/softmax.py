"""Softmax of scaled attention scores, ``softmax(x * scale)`` over the last axis; its CPU path is a fused kernel.

MindSpore's CPU attention ran the scaling (``Mul``) and the softmax as two passes over the
scores, and its Softmax took twice torch's time (TNT-S, batch 8 inference: 58 ms against
29.5, and 22.5 ms of ``Mul``). ``ScaledSoftmax`` with ``cpu_kernel=True`` runs one fused
loop per row of ``softmax_cpu.cc`` -- v = x * scale in float32 (the product ``attn * scale``
gives), exp(v - max v) with glibc's vector expf, the row sum in double -- and its gradient
dx = scale * y * (dy - sum(dy * y)) as MindSpore AOT custom ops, rows split over the
machine's threads, built and cached like the GELU kernel (``cpu_kernels``). Everywhere
else -- an input that is not fp32, another device, no compiler, a failed build -- it is
``ops.softmax(x * scale, axis=-1)``.
"""
import functools

import mindspore as ms
from mindspore import nn, ops

from mindspore_tnt import cpu_kernels


def _softmax_ops(path):
    grad = ops.Custom(f'{path}:ScaledSoftmaxGrad', out_shape=lambda y, dy, scale: y,
                      out_dtype=lambda y, dy, scale: y, func_type='aot')

    def bprop(x, scale, out, dout):
        return grad(out, dout, scale), ops.zeros_like(scale)

    return ops.Custom(f'{path}:ScaledSoftmax', out_shape=lambda x, scale: x, out_dtype=lambda x, scale: x,
                      func_type='aot', bprop=bprop)


@functools.lru_cache(maxsize=None)
def kernel_ops():
    """The (forward, with its bprop) custom op of the CPU kernel, or None where it cannot run."""
    return cpu_kernels.load('softmax_cpu.cc', 'softmax', _softmax_ops)


class ScaledSoftmax(nn.Cell):
    """``ops.softmax(x * scale, axis=-1)``; with ``cpu_kernel=True``, fp32 inputs run on the CPU kernel."""

    def __init__(self, scale, cpu_kernel=False):
        super().__init__()
        self.scale = scale
        self.kernel = kernel_ops() if cpu_kernel else None
        self.scale_tensor = ms.Tensor([scale], ms.float32)

    def construct(self, x):
        if self.kernel is None or x.dtype != ms.float32:
            return ops.softmax(x * self.scale, axis=-1)
        return self.kernel(x, self.scale_tensor)
