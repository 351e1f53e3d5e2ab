"""The coefficients of ``mindspore_tnt/vector_math.h``'s erf, printed as C++.

``python scripts/erf_coefficients.py`` (numpy, scipy).

erf(x) = x + x·P(x²) for |x| < 1 and 1 - Q(t), t = (|x| - 2.5)·(2/3), for 1 <= |x| < 4 (beyond:
±1, erf's float32 value). Each polynomial is a least-squares fit in float64 on
Chebyshev-spaced points, reweighted towards the smallest largest error (relative for P,
absolute for Q); its coefficients are rounded to float32 one at a time, lowest first, the
higher ones fitted again after each.
"""
import numpy as np
from numpy.polynomial import polynomial as poly
from scipy.special import erf

SPLIT, ONE, POINTS, ROUNDS = 1.0, 4.0, 20000, 40
P_DEGREE, Q_DEGREE = 6, 14


def fit(x, y, deg, scale):
    """float32 coefficients (lowest first) of a degree-``deg`` fit of y(x), errors over ``scale``."""
    fixed = []
    for k in range(deg + 1):
        rest = y - poly.polyval(x, fixed) if fixed else y
        basis = np.stack([x ** j for j in range(k, deg + 1)], axis=1)
        w = np.ones_like(x)
        for _ in range(ROUNDS):
            c = np.linalg.lstsq(basis * (w / scale)[:, None], rest * w / scale, rcond=None)[0]
            r = np.abs(basis @ c - rest) / scale
            w *= 1 + 20 * r / r.max()
            w /= w.max()
        fixed.append(float(np.float32(c[0])))
    return np.array(fixed, np.float32), np.max(np.abs(poly.polyval(x, np.float64(fixed)) - y) / scale)


def main():
    nodes = (1 - np.cos(np.linspace(0, np.pi, POINTS))) / 2           # Chebyshev-spaced on [0, 1]
    u = SPLIT ** 2 * nodes
    x = np.sqrt(u)
    ratio = np.where(x > 0, erf(x) / np.where(x > 0, x, 1), 2 / np.sqrt(np.pi))   # erf(x) / x
    p, p_err = fit(u, ratio - 1, P_DEGREE, ratio)
    t = 2 * nodes - 1
    q, q_err = fit(t, 1 - erf(np.float32((ONE + SPLIT) / 2) + t / np.float32(2 / (ONE - SPLIT))), Q_DEGREE, 1.)
    print(f'// P: relative error {p_err:.1e}, Q: absolute error {q_err:.1e}, in float64 with these coefficients')
    for name, c in (('kErfP', p), ('kErfQ', q)):
        values = [f'{float(v)!r}f' for v in c]
        print(f'constexpr float {name}[] = {{\n' + ',\n'.join('    ' + ', '.join(values[i:i + 4])
                                                             for i in range(0, len(values), 4)) + '};')


if __name__ == '__main__':
    main()
