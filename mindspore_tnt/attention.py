"""Multi-head self-attention over short sequences as one vectorised CPU kernel.

TNT's inner attention runs 1568 sentences of 16 words (TNT-S, batch 8) with heads of 6
columns: as MindSpore ops it is mostly reshapes, transposes, an unstack and BatchMatMuls of
16 x 6 matrices, several times the arithmetic's cost. ``SmallHeadAttention`` takes the q/k/v
projections as the Dense layers produce them (``[a, b]``: q, k, v the first, second and third
D columns, TNT's ``qk`` and ``v``, PyramidTNT's ``q`` and ``kv``) and returns the heads'
``softmax((q kᵀ) * scale) v`` in the (N, L, D) order of the transposes it replaces, in one
loop over the (sequence, head) pairs of ``attention_cpu.cc`` -- scores in fp32, scaled after the product,
max-subtracted softmax -- with its gradient (probabilities recomputed) as MindSpore AOT custom
ops, built and cached like the GELU kernel (``cpu_kernels``). ``takes`` says where it runs:
fp32 projections of sequences up to ``MAX_LEN`` long, no attention dropout in training, and a
kernel that built; elsewhere the attention's own formulation runs.
"""
import functools

import mindspore as ms
from mindspore import nn, ops

from mindspore_tnt import cpu_kernels

# Longest sequence the kernel takes. Measured with heads of 64 columns (GRAPH mode, forward
# and backward): 2.3x MindSpore's ops at length 17, 2.2x at 64, 0.76x at 128, 0.52x at 197
# (TNT-S's outer attention, where BatchMatMul's blocked matmuls win).
MAX_LEN = 64


def _attention_ops(path):
    grad = ops.Custom(f'{path}:SmallHeadAttentionGrad', out_shape=lambda a, b, scale, heads, dout: (a, b),
                      out_dtype=lambda a, b, scale, heads, dout: (a, b), func_type='aot')

    def bprop(a, b, scale, heads, out, dout):
        da, db = grad(a, b, scale, heads, dout)
        return da, db, ops.zeros_like(scale), ops.zeros_like(heads)

    return ops.Custom(f'{path}:SmallHeadAttention',
                      out_shape=lambda a, b, scale, heads: (*a[:-1], (a[-1] + b[-1]) // 3),
                      out_dtype=lambda a, b, scale, heads: a, func_type='aot', bprop=bprop)


@functools.lru_cache(maxsize=None)
def kernel_ops():
    """The (forward, with its bprop) custom op of the CPU kernel, or None where it cannot run."""
    return cpu_kernels.load('attention_cpu.cc', 'attention', _attention_ops)


def takes(kernel, a, dropout):
    """Whether ``kernel`` (None: not built) runs on projections ``a`` (N, L, C): fp32, L <=
    ``MAX_LEN``, ``dropout`` (attention dropout active) False. A function of values, not a
    Cell method: GRAPH mode resolves it the same way wherever it is called from."""
    return kernel is not None and a.dtype == ms.float32 and a.shape[1] <= MAX_LEN and not dropout


class SmallHeadAttention(nn.Cell):
    """``num_heads`` heads of softmax((q kᵀ) * ``scale``) v from [a, b] = [q, k, v] (N, L, 3 D)
    -> (N, L, D) on the CPU kernel; ``kernel`` is None with ``cpu_kernel=False`` or no kernel."""

    def __init__(self, num_heads, scale, cpu_kernel=False):
        super().__init__()
        self.kernel = kernel_ops() if cpu_kernel else None
        self.scale = ms.Tensor([scale], ms.float32)
        self.heads = ms.Tensor([num_heads], ms.int32)

    def construct(self, a, b):
        return self.kernel(a, b, self.scale, self.heads)
