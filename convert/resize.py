"""Resampling ``patch_pos`` to another input size, as timm does when it loads TNT weights at
another size (``resample_abs_pos_embed``): cls token kept, grid resized bicubically with
antialiasing, i.e. torch's ``interpolate(mode='bicubic', align_corners=False, antialias=True)``.

That kernel is PIL's: cubic convolution with a = -0.5, widened by the scale when shrinking,
weights normalised to sum 1 and cut at the edges (no samples repeated). Written in numpy so no
framework is needed; the tests compare it with torch.
"""
import math

import numpy as np

A = -0.5


def _cubic(x):
    x = np.abs(x)
    return np.where(x < 1, ((A + 2) * x - (A + 3)) * x * x + 1,
                    np.where(x < 2, ((A * x - 5 * A) * x + 8 * A) * x - 4 * A, 0.))


def bicubic_matrix(n_in, n_out):
    """``(n_out, n_in)`` matrix resampling a length-``n_in`` axis to ``n_out`` samples."""
    scale = n_in / n_out
    support = 2. * max(scale, 1.)           # the cubic's half-width 2, in input samples
    inv = 1. / max(scale, 1.)
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        w = _cubic((np.arange(lo, hi) - center + 0.5) * inv)
        m[i, lo:hi] = w / w.sum()
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
