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

``GELU.bias_kernel`` is ``GELU(fc(x))`` with the bias of the ``Dense`` layer before it (an
MLP's fc1) added inside the GELU kernel (``GeluErfBias``): the same bits as the bias add then
the GELU, one pass over the activation fewer; its gradient sums the GELU's input gradient
with the bias kernel's ``BiasAddLastAxisGrad``. ``Mlp.fc1_act`` uses it where ``bias_inside``.
"""
import functools

import mindspore as ms
from mindspore import nn, ops

from mindspore_tnt import cpu_kernels, dense


def _gelu_ops(path):
    return cpu_kernels.unary_ops(path, 'GeluErf')


def _gelu_bias_ops(path, bias_grad):
    grad = ops.Custom(f'{path}:GeluErfBiasGrad', out_shape=lambda x, b, dy: x, out_dtype=lambda x, b, dy: x,
                      func_type='aot')

    def bprop(x, b, out, dout):
        dx = grad(x, b, dout)
        return dx, bias_grad(dx, b)

    return ops.Custom(f'{path}:GeluErfBias', out_shape=lambda x, b: x, out_dtype=lambda x, b: x, func_type='aot',
                      bprop=bprop)


@functools.lru_cache(maxsize=None)
def kernel_ops():
    """The (forward, with its bprop) custom op of the CPU kernel, or None where it cannot run."""
    return cpu_kernels.load('gelu_cpu.cc', 'GELU', _gelu_ops)


@functools.lru_cache(maxsize=None)
def bias_kernel_ops():
    """The custom op of GELU(x + b) (with its bprop), or None where the GELU or the bias kernel cannot run."""
    bias_grad = dense.bias_grad_op()
    if bias_grad is None or kernel_ops() is None:
        return None
    return cpu_kernels.load('gelu_cpu.cc', 'GELU', functools.partial(_gelu_bias_ops, bias_grad=bias_grad))


class GELU(nn.GELU):
    """``nn.GELU(approximate)``; the exact form with ``cpu_kernel=True`` runs fp32 inputs on the CPU kernel."""

    def __init__(self, approximate=False, cpu_kernel=False):
        super().__init__(approximate=approximate)
        self.kernel = kernel_ops() if cpu_kernel and not approximate else None
        self.bias_kernel = bias_kernel_ops() if self.kernel is not None else None

    def construct(self, x):
        if self.kernel is None or x.dtype != ms.float32:
            return super().construct(x)
        return self.kernel(x)


def bias_inside(act, fc):
    """Whether ``act(fc(x))`` can add fc's bias inside act's kernel: ``act`` a ``GELU`` and ``fc``
    a ``dense.Dense``, both on their CPU kernels (any other activation or layer can stand in)."""
    if isinstance(act, GELU) and isinstance(fc, dense.Dense):
        return act.bias_kernel is not None and fc.kernel is not None
    return False
