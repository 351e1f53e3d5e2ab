"""The sum of squares of a tensor (a gradient norm's parts); its CPU path is a vectorised kernel.

MindSpore's CPU ``Square`` and ``ReduceSum`` over the 363 gradients of a TNT-S training step
took 150 ms of it (torch's norms: 8 ms). ``kernel_ops()`` runs the loop of ``square_sum_cpu.cc``
-- squares summed in double per block, blocks added in order -- as a MindSpore AOT custom
op, built and cached like the GELU kernel (``cpu_kernels``); where it cannot run (not fp32,
another device, no compiler, a failed build) ``tnt_train.train_step`` sums with those ops.
"""
import functools

from mindspore import ops

from mindspore_tnt import cpu_kernels


def square_sum_op(path):
    """The custom op ``x -> (sum x²,)`` of the library at ``path``."""
    return ops.Custom(f'{path}:SquareSum', out_shape=lambda x: (1,), out_dtype=lambda x: x, func_type='aot')


@functools.lru_cache(maxsize=None)
def kernel_ops():
    """The custom op of the CPU kernel (``square_sum_op``), or None where it cannot run."""
    return cpu_kernels.load('square_sum_cpu.cc', 'square-sum', square_sum_op)
