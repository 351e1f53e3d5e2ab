"""Drop path's per-sample scaling, ``x / keep_prob * mask``; its CPU path is a kernel.

As MindSpore ops the scaling is a division and a broadcasting multiplication, and their
gradients two more; in the TNT-S training step (batch 8, drop path 0.1) those made the
peak 1.6 GB higher than with drop path 0 (docs/performance.md, "Training memory"), far
more than the tensors involved. ``kernel_ops()`` runs the scaling and its gradient as
MindSpore AOT custom ops (``droppath_cpu.cc``, built and cached like the GELU kernel,
``cpu_kernels``): the same float operations in the same order, bit-identical. Where it
cannot run -- not fp32, another device, no compiler, a failed build -- ``DropPath`` uses
the MindSpore ops.
"""
import functools

from mindspore import ops

from mindspore_tnt import cpu_kernels


def _droppath_ops(path):
    grad = ops.Custom(f'{path}:DropPathScaleGrad', out_shape=lambda dy, mask, keep: dy,
                      out_dtype=lambda dy, mask, keep: dy, func_type='aot')

    def bprop(x, mask, keep, out, dout):
        return grad(dout, mask, keep), ops.zeros_like(mask), ops.zeros_like(keep)

    return ops.Custom(f'{path}:DropPathScale', out_shape=lambda x, mask, keep: x,
                      out_dtype=lambda x, mask, keep: x, func_type='aot', bprop=bprop)


@functools.lru_cache(maxsize=None)
def kernel_ops():
    """The custom op ``(x, mask, keep) -> x / keep * mask`` (with its bprop), or None where it cannot run."""
    return cpu_kernels.load('droppath_cpu.cc', 'DropPath', _droppath_ops)
