"""``nn.Dense`` whose bias add and bias gradient run on a CPU kernel.

MindSpore's CPU BiasAddGrad reduces the rows of the output gradient one column at a time:
in a TNT-S training step it was the fourth most costly operator. ``Dense`` with
``cpu_kernel=True`` adds the bias with the loop of ``bias_cpu.cc`` and sums its gradient
over row blocks in double, split over the machine's threads (built and cached like the GELU
kernel, ``cpu_kernels``). Everywhere else -- an fp16 input or weight (AMP), no bias, no
compiler, a failed build -- it is ``nn.Dense`` itself. Same ``weight`` and ``bias``
parameters, so checkpoints, key maps and AMP do not change.
"""
import functools

import mindspore as ms
from mindspore import nn, ops

from mindspore_tnt import cpu_kernels


def _bias_grad_op(path):
    return ops.Custom(f'{path}:BiasAddLastAxisGrad', out_shape=lambda dy, b: b, out_dtype=lambda dy, b: b,
                      func_type='aot')


def _bias_ops(path):
    grad = _bias_grad_op(path)

    def bprop(x, b, out, dout):
        return dout, grad(dout, b)

    return ops.Custom(f'{path}:BiasAddLastAxis', out_shape=lambda x, b: x, out_dtype=lambda x, b: x,
                      func_type='aot', bprop=bprop)


@functools.lru_cache(maxsize=None)
def kernel_ops():
    """The (forward, with its bprop) custom op of the CPU kernel, or None where it cannot run."""
    return cpu_kernels.load('bias_cpu.cc', 'BiasAdd', _bias_ops)


@functools.lru_cache(maxsize=None)
def bias_grad_op():
    """The custom op of the bias gradient alone (``db``), or None where it cannot run."""
    return cpu_kernels.load('bias_cpu.cc', 'BiasAdd', _bias_grad_op)


class Dense(nn.Dense):
    """``nn.Dense(in_channels, out_channels, has_bias)``; with ``cpu_kernel=True`` an fp32 bias
    add and its gradient run on the CPU kernel."""

    def __init__(self, in_channels, out_channels, has_bias=True, cpu_kernel=False):
        super().__init__(in_channels, out_channels, has_bias=has_bias)
        self.kernel = kernel_ops() if cpu_kernel and has_bias else None

    def construct(self, x):
        if self.kernel is None:
            return super().construct(x)
        y = self.product(x)
        if y.dtype == ms.float32 and self.bias.dtype == ms.float32:
            y = self.kernel(y, self.bias)
        else:
            y = self.bias_add(y, self.bias)
        return y.reshape(x.shape[:-1] + (-1,))

    def product(self, x):
        """``x Wᵀ`` over the rows of ``x``: (rows, out_channels), the layer before its bias."""
        return self.matmul(x.reshape(-1, x.shape[-1]), self.weight)
