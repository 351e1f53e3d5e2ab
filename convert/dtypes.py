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
    if dtype not in DTYPES:
        raise ConversionError(f'unknown dtype {dtype!r}; choose from {", ".join(DTYPES)}')
    with np.errstate(over='ignore'):
        if dtype == 'bf16':
            out = bf16_bits(a)
            infinite = (out & 0x7FFF) == 0x7F80
        else:
            out = np.ascontiguousarray(a, np.float32 if dtype == 'fp32' else np.float16)
            infinite = np.isinf(out)
    overflow = infinite & np.isfinite(a)
    if overflow.any():
        raise ConversionError(f'values up to {np.max(np.abs(a), where=overflow, initial=0.):.3g} overflow {dtype}')
    return out, dtype


def rounded(a, dtype):
    """``a`` rounded to ``dtype`` and back to fp32: the values a ``dtype`` file holds."""
    stored, name = storage(a, dtype)
    if name == 'bf16':
        return from_bf16_bits(stored)
    return stored.astype(np.float32) if name == 'fp16' else stored
