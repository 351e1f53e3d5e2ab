"""Attention heads split from projection rows and merged back, on a CPU kernel.

TNT's outer attention (197 sentences) runs on MindSpore's BatchMatMul, which wants each head's
(L, d) matrix contiguous: as MindSpore ops that is a 5-D transpose and an unstack for q and k,
a transpose for v and one back for the output, three ``Transpose`` calls per block at about
0.8 ms each on TNT-S's (8, 197, 768). ``heads_cpu.cc`` makes the same moves as copies of each
head's d contiguous floats over the machine's threads: the same bits, forward and backward
(the gradient of a move is the inverse move), built and cached like the GELU kernel
(``cpu_kernels``). Each op's name fixes its outputs and gradient, and its shapes follow from its
inputs' alone (MindSpore's PyNative mode keeps one shape function per custom op name).
"""
import functools

import mindspore as ms
from mindspore import ops

from mindspore_tnt import cpu_kernels


def _ops(path):
    def swapped(x):
        return [x[0], x[2], x[1], x[3]]

    def custom(name, out_shape, out_dtype, bprop=None):
        return ops.Custom(f'{path}:{name}', out_shape=out_shape, out_dtype=out_dtype, func_type='aot', bprop=bprop)

    def split2_bprop(x, out, dout):
        return (merge2(dout[0], dout[1]),)

    def swap_bprop(x, out, dout):
        return (swap(dout),)

    merge2 = custom('MergeHeads2', lambda q, k: [q[0], q[2], 2 * q[1], q[3]], lambda q, k: q)
    split2 = custom('SplitHeads2', lambda x: ([x[0], x[2] // 2, x[1], x[3]],) * 2, lambda x: (x, x), split2_bprop)
    swap = custom('SwapAxes12', swapped, lambda x: x, swap_bprop)
    return swap, split2


@functools.lru_cache(maxsize=None)
def kernel_ops():
    """``(swap, split2)``, or None where the kernel cannot run: ``swap(x)`` of (B, L, H, d) is
    ``transpose(x, (0, 2, 1, 3))``; ``split2(x)`` of (B, L, 2 H, d) is ``(q, k)``, both (B, H, L, d),
    the first and the last H heads, as ``unstack(transpose(x.reshape(B, L, 2, H, d), (2, 0, 3, 1, 4)))``."""
    return cpu_kernels.load('heads_cpu.cc', 'Transpose', _ops)


def split_heads(kernel, x, parts, num_heads):
    """x (B, L, parts * H * d) as ``parts`` tensors (B, H, L, d) (one tensor for one part), on ``kernel``
    (``kernel_ops()``, or None: MindSpore's transpose) where x is float32."""
    B, L, C = x.shape
    d = C // (parts * num_heads)
    if kernel is not None and x.dtype == ms.float32:
        return kernel[parts - 1](x.reshape(B, L, parts * num_heads, d))
    if parts == 1:
        return ops.transpose(x.reshape(B, L, num_heads, d), (0, 2, 1, 3))
    return ops.unstack(ops.transpose(x.reshape(B, L, parts, num_heads, d), (2, 0, 3, 1, 4)), 0)


def merge_heads(kernel, x):
    """x (B, H, L, d) as (B, L, H * d), on ``kernel`` as in ``split_heads``."""
    B, H, L, d = x.shape
    y = kernel[0](x) if kernel is not None and x.dtype == ms.float32 else ops.transpose(x, (0, 2, 1, 3))
    return y.reshape(B, L, H * d)
