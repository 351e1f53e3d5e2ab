"""Mixed-precision levels of the MindSpore TNT, shared by training and the parity report.

O0: fp32 everywhere. O2 (the default on Ascend/GPU): Dense layers and matmuls in fp16;
LayerNorm, softmax, GELU and residual adds stay fp32. O3: the whole network in fp16.
"""
import mindspore as ms
from mindspore import nn, ops

AMP_LEVELS = ('O0', 'O2', 'O3')


def _fp16_white_list():
    from mindspore.ops.auto_generate import gen_ops_prim
    extra = [getattr(gen_ops_prim, n) for n in ('MatMulExt', 'BatchMatMulExt') if hasattr(gen_ops_prim, n)]
    return [nn.Dense, ops.MatMul, ops.BatchMatMul] + extra


def apply_amp(net, level):
    """Return ``net`` prepared for ``level`` (one of ``AMP_LEVELS``); inputs and outputs stay fp32."""
    if level not in AMP_LEVELS:
        raise ValueError(f'unknown AMP level {level!r}; choose one of {", ".join(AMP_LEVELS)}')
    if level == 'O0':
        return net
    if level == 'O2':
        return ms.amp.custom_mixed_precision(net, white_list=_fp16_white_list(), dtype=ms.float16)
    return ms.amp.auto_mixed_precision(net, 'O3', ms.float16)
