"""Mixed-precision levels of the MindSpore TNT, shared by training and the parity report.

O0: fp32 everywhere.
O2 (the default for training): the matmuls in fp16 -- every Dense layer, the attention's
q·kᵀ and attn·v, and the pixel-embedding convolution -- while LayerNorm, softmax, GELU,
bias adds and residual adds stay fp32. Built on MindSpore's operator-level AMP
(``amp_level='auto'``): matmul and convolution primitives run in fp16, LayerNorm and
softmax are forced to fp32, every other op runs in the dtype of its inputs. An fp16
matmul's output meets an fp32 bias add, LayerNorm or softmax, so fp16 does not reach
GELU or the residual stream.
O3: the whole network in fp16 (every cell's inputs and parameters cast, LayerNorm and
softmax included); outputs cast back to fp32.

Apply the level to the outermost Cell that is called (the model, its loss cell, or
``WithStages``): O2 acts within the ``construct`` of the cell it is given.
``parity.dtypes`` reads the dtypes a compiled graph really computes; the parity tests
check them for every level.
"""
import mindspore as ms

AMP_LEVELS = ('O0', 'O2', 'O3')


def apply_amp(net, level):
    """Return ``net`` prepared for ``level`` (one of ``AMP_LEVELS``); inputs and outputs stay fp32."""
    if level not in AMP_LEVELS:
        raise ValueError(f'unknown AMP level {level!r}; choose one of {", ".join(AMP_LEVELS)}')
    if level == 'O0':
        return net
    if level == 'O2':
        return ms.amp.auto_mixed_precision(net, 'auto', ms.float16)
    return ms.amp.auto_mixed_precision(net, 'O3', ms.float16)
