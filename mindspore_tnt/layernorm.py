"""LayerNorm over the last axis; its CPU path is a vectorised kernel.

MindSpore's CPU LayerNorm and LayerNormGrad were 7-10x slower than torch's on TNT's shapes
(TNT-S, batch 8: 109 ms of LayerNorm and 458 ms of LayerNormGrad a step, torch 12 and 16).
``LayerNorm`` with ``cpu_kernel=True`` runs the loops of ``layernorm_cpu.cc`` -- per row, the
mean and biased variance in double, eps inside the square root, torch's formula -- and their
gradient as MindSpore AOT custom ops, rows split over the machine's threads (the parameter
gradients summed in fixed blocks of rows: the same bits for any thread count), built and
cached like the GELU kernel (``cpu_kernels``). Everywhere else -- an input, gamma or beta that is not fp32 (AMP O3, or
a cell cast to fp16), a normalized shape of more than one axis, no compiler, a failed build
-- it is ``nn.LayerNorm`` itself. It is an ``nn.LayerNorm``, with the same ``gamma`` and
``beta`` parameters, so checkpoints, key maps and AMP's treatment of LayerNorm cells do not
change.
"""
import functools

import mindspore as ms
from mindspore import nn, ops

from mindspore_tnt import cpu_kernels


def _layernorm_ops(path):
    grad = ops.Custom(f'{path}:LayerNormLastAxisGrad', out_shape=lambda x, dy, gamma, eps: (x, gamma, gamma),
                      out_dtype=lambda x, dy, gamma, eps: (x, gamma, gamma), func_type='aot')

    def bprop(x, gamma, beta, eps, out, dout):
        dx, dgamma, dbeta = grad(x, dout, gamma, eps)
        return dx, dgamma, dbeta, ops.zeros_like(eps)

    return ops.Custom(f'{path}:LayerNormLastAxis', out_shape=lambda x, gamma, beta, eps: x,
                      out_dtype=lambda x, gamma, beta, eps: x, func_type='aot', bprop=bprop)


@functools.lru_cache(maxsize=None)
def kernel_ops():
    """The (forward, with its bprop) custom op of the CPU kernel, or None where it cannot run."""
    return cpu_kernels.load('layernorm_cpu.cc', 'LayerNorm', _layernorm_ops)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm(normalized_shape, epsilon=epsilon)``; with ``cpu_kernel=True`` and a 1-D
    ``normalized_shape`` (the last axis), fp32 inputs run on the CPU kernel."""

    def __init__(self, normalized_shape, epsilon, cpu_kernel=False):
        super().__init__(normalized_shape, epsilon=epsilon)
        use = cpu_kernel and len(normalized_shape) == 1
        self.kernel = kernel_ops() if use else None
        self.eps = ms.Tensor([epsilon], ms.float32)

    def construct(self, input_x):
        if (self.kernel is None or input_x.dtype != ms.float32 or self.gamma.dtype != ms.float32
                or self.beta.dtype != ms.float32):
            return super().construct(input_x)
        return self.kernel(input_x, self.gamma, self.beta, self.eps)
