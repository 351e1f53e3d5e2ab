"""Resampling ``patch_pos`` to another input size: cls token kept, grid resized bicubically.

Bicubic as in torch's ``interpolate(mode='bicubic', align_corners=False)`` (cubic
convolution with a = -0.75, edge samples repeated), written in numpy so no framework is
needed; the tests compare it with torch.
"""
import math

import numpy as np

A = -0.75


def _cubic(x):
    x = np.abs(x)
    return np.where(x <= 1, ((A + 2) * x - (A + 3)) * x * x + 1,
                    np.where(x < 2, ((A * x - 5 * A) * x + 8 * A) * x - 4 * A, 0.))


def bicubic_matrix(n_in, n_out):
    """``(n_out, n_in)`` matrix resampling a length-``n_in`` axis to ``n_out`` samples."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(src).astype(int)
    t = src - base
    m = np.zeros((n_out, n_in))
    for k in range(-1, 3):
        idx = np.clip(base + k, 0, n_in - 1)
        np.add.at(m, (np.arange(n_out), idx), _cubic(t - k))
    return m


def resample_patch_pos(patch_pos, grid):
    """``(1, 1 + g*g, D)`` -> ``(1, 1 + grid*grid, D)``, the cls token row unchanged."""
    n = patch_pos.shape[1] - 1
    g = math.isqrt(n)
    if g == grid:
        return patch_pos
    rows = patch_pos[0, 1:].astype(np.float64).reshape(g, g, -1)
    m = bicubic_matrix(g, grid)
    resized = np.einsum('ai,ijd,bj->abd', m, rows, m).reshape(1, grid * grid, -1)
    return np.concatenate([patch_pos[:, :1], resized.astype(patch_pos.dtype)], axis=1)
