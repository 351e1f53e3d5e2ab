"""Numpy comparisons of activations: the only place parity errors are computed."""
import numpy as np


def max_abs_err(test, ref):
    return float(np.max(np.abs(np.asarray(test, np.float64) - np.asarray(ref, np.float64))))


def rel_err(test, ref):
    """``max|test - ref| / max|ref|``: the parity bound's measure."""
    ref = np.asarray(ref, np.float64)
    return max_abs_err(test, ref) / max(float(np.max(np.abs(ref))), np.finfo(np.float64).tiny)


def cosine(test, ref):
    a = np.asarray(test, np.float64).ravel()
    b = np.asarray(ref, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), np.finfo(np.float64).tiny))


def stage_names(depth):
    return ['embed'] + [f'block {i}' for i in range(depth)]


def compare_stages(test_stages, ref_stages):
    """Rows ``{stage, stream, max_abs, rel, cos}`` for inner and outer tokens of every stage."""
    rows = []
    for name, test, ref in zip(stage_names(len(ref_stages) - 1), test_stages, ref_stages):
        for stream, t, r in (('inner', test[0], ref[0]), ('outer', test[1], ref[1])):
            rows.append(dict(stage=name, stream=stream, max_abs=max_abs_err(t, r),
                             rel=rel_err(t, r), cos=cosine(t, r)))
    return rows


def first_failure(rows, bound):
    """The first row (in forward order) whose relative error exceeds ``bound``, or None."""
    for row in rows:
        if not row['rel'] <= bound:
            return row
    return None


def format_rows(rows):
    lines = [f"{'stage':<10} {'stream':<6} {'max|d|':>10} {'rel':>10} {'cosine':>12}"]
    for r in rows:
        lines.append(f"{r['stage']:<10} {r['stream']:<6} {r['max_abs']:>10.3e} {r['rel']:>10.3e} "
                     f"{r['cos']:>12.9f}")
    return '\n'.join(lines)
