"""Softmax over the last axis, and its gradient, on a CPU kernel.

MindSpore's CPU Softmax over TNT-S's outer attention scores (8, 6, 197, 197) took 1.6 ms a
call, torch's about 1.0 ms, and its gradient runs as four elementwise and reduction ops.
``softmax_cpu.cc`` computes both in one pass over each row, over the machine's threads, with
glibc's vector ``expf`` (built and cached like the GELU kernel, ``cpu_kernels``): the same
formula (max subtracted, exponentials divided by their sum; ``y * (dy - sum(dy * y))``), with
float32 results that may differ from MindSpore's in the last bits.
"""
import functools

import mindspore as ms
from mindspore import ops

from mindspore_tnt import cpu_kernels


def _softmax_ops(path):
    return cpu_kernels.unary_ops(path, 'SoftmaxLastAxis', grad_of_output=True)


@functools.lru_cache(maxsize=None)
def kernel_ops():
    """The custom op of the softmax over the last axis (with its bprop), or None where it cannot run."""
    return cpu_kernels.load('softmax_cpu.cc', 'Softmax', _softmax_ops)


def softmax(kernel, x):
    """Softmax of ``x`` over its last axis, on ``kernel`` (``kernel_ops()``, or None: ``ops.softmax``) where x is
    float32."""
    return kernel(x) if kernel is not None and x.dtype == ms.float32 else ops.softmax(x, axis=-1)
