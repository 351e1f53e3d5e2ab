"""Storage dtypes of converted checkpoints; bfloat16 travels as its uint16 bit pattern.

numpy has no bfloat16, so the hub format keeps fp32 (or fp16) arrays and the writers
store bf16 as raw bits, rounded to nearest even like torch and MindSpore do.
"""
import numpy as np

from convert.errors import ConversionError

DTYPES = ('fp32', 'fp16', 'bf16')
ITEMSIZE = {'fp32': 4, 'fp16': 2, 'bf16': 2}


def stored_nbytes(a, dtype):
    """Bytes ``a`` takes when stored as ``dtype`` (non-float arrays keep their own)."""
    return a.size * ITEMSIZE[dtype] if np.issubdtype(a.dtype, np.floating) else a.nbytes


def bf16_bits(a):
    """fp32 array -> uint16 bfloat16 bit patterns (round to nearest, ties to even)."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(bits):
    """uint16 bfloat16 bit patterns -> fp32 array (exact)."""
    return (np.ascontiguousarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def storage(a, dtype):
    """``a`` as stored for ``dtype``: (array whose bytes are written, dtype name)."""
    if not np.issubdtype(a.dtype, np.floating):
        return a, str(a.dtype)
    if dtype == 'fp32':
        return np.ascontiguousarray(a, np.float32), 'fp32'
    if dtype == 'fp16':
        if np.max(np.abs(a), initial=0.) > np.finfo(np.float16).max:
            raise ConversionError(f'values up to {np.max(np.abs(a)):.3g} overflow fp16')
        return np.ascontiguousarray(a, np.float16), 'fp16'
    if dtype == 'bf16':
        return bf16_bits(a), 'bf16'
    raise ConversionError(f'unknown dtype {dtype!r}; choose from {", ".join(DTYPES)}')


def rounded(a, dtype):
    """``a`` rounded to ``dtype`` and back to fp32: the values a ``dtype`` file holds."""
    stored, name = storage(a, dtype)
    if name == 'bf16':
        return from_bf16_bits(stored)
    return stored.astype(np.float32) if name == 'fp16' else stored
