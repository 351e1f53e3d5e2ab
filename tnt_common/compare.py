"""Numpy comparisons of activations: the only place parity errors are computed."""
import numpy as np

FP32_BOUND = 1e-5


def max_abs_err(test, ref):
    return float(np.max(np.abs(np.asarray(test, np.float64) - np.asarray(ref, np.float64))))


def rel_to(test, ref, scale):
    """``max|test - ref| / max|scale|``: the error against the size of ``scale``."""
    return max_abs_err(test, ref) / max(float(np.max(np.abs(np.asarray(scale, np.float64)))),
                                        np.finfo(np.float64).tiny)


def rel_err(test, ref):
    """``max|test - ref| / max|ref|``: the parity bound's measure."""
    return rel_to(test, ref, ref)


def cosine(test, ref):
    a = np.asarray(test, np.float64).ravel()
    b = np.asarray(ref, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), np.finfo(np.float64).tiny))


def stage_names(depth):
    return ['embed'] + [f'block {i}' for i in range(depth)]


def compare_stages(test_stages, ref_stages, names=None):
    """Rows ``{stage, stream, max_abs, rel, cos}`` for inner and outer tokens of every stage;
    ``names`` of the stages, by default TNT's (``stage_names``)."""
    names = stage_names(len(ref_stages) - 1) if names is None else names
    if len(names) != len(ref_stages):
        raise ValueError(f'{len(names)} stage names for {len(ref_stages)} stages')
    rows = []
    for name, test, ref in zip(names, test_stages, ref_stages):
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


def compare_logits(test, ref, bound=FP32_BOUND):
    """``{max_abs, rel, top1_same, passed}`` of logits ``test`` against ``ref``: within ``bound``, same top-1."""
    rel = rel_err(test, ref)
    top1_same = bool(np.all(np.argmax(test, -1) == np.argmax(ref, -1)))
    return dict(max_abs=max_abs_err(test, ref), rel=rel, top1_same=top1_same, passed=rel <= bound and top1_same)


def compare_outputs(test, ref, bound=FP32_BOUND, names=None):
    """Report of one forward comparison of ``(logits, stages)``: per-stage rows, logits error,
    top-1 agreement, verdict. ``names``: of the stages (``compare_stages``)."""
    rows = compare_stages(test[1], ref[1], names)
    logits = compare_logits(test[0], ref[0], bound)
    failure = first_failure(rows, bound)
    return dict(rows=rows, logits_rel=logits['rel'], logits_max_abs=logits['max_abs'],
                top1_same=logits['top1_same'], first_failure=failure,
                passed=failure is None and logits['passed'])


def describe_failure(report, bound=FP32_BOUND):
    """Where a ``compare_outputs`` report first diverged, in one line."""
    f = report['first_failure']
    if f is not None:
        return (f"{f['stage']} {f['stream']} tokens diverged first: rel err {f['rel']:.3e} > {bound:.0e} "
                f"(max|d| {f['max_abs']:.3e}, cosine {f['cos']:.9f})")
    if report['logits_rel'] > bound:
        return f"logits diverged: rel err {report['logits_rel']:.3e} > {bound:.0e}"
    if not report['top1_same']:
        return 'logits top-1 differs'
    return 'no divergence'


def format_rows(rows):
    w = max([10] + [len(r['stage']) for r in rows])
    lines = [f"{'stage':<{w}} {'stream':<6} {'max|d|':>10} {'rel':>10} {'cosine':>12}"]
    for r in rows:
        lines.append(f"{r['stage']:<{w}} {r['stream']:<6} {r['max_abs']:>10.3e} {r['rel']:>10.3e} "
                     f"{r['cos']:>12.9f}")
    return '\n'.join(lines)


def rel_l2_err(test, ref):
    """``||test - ref||_2 / ||ref||_2``: an error measure that a few outlying elements cannot dominate."""
    t = np.asarray(test, np.float64)
    r = np.asarray(ref, np.float64)
    return float(np.linalg.norm(t - r) / max(np.linalg.norm(r), np.finfo(np.float64).tiny))


def median_rel_err(test, ref):
    """``median|test - ref| / median|ref|``: the typical element's error, blind to a few outliers."""
    t = np.asarray(test, np.float64)
    r = np.asarray(ref, np.float64)
    return float(np.median(np.abs(t - r)) / max(float(np.median(np.abs(r))), np.finfo(np.float64).tiny))


def _same_names(test, ref):
    missing, extra = sorted(set(ref) - set(test)), sorted(set(test) - set(ref))
    if missing or extra:
        raise KeyError(f'tensor names differ: missing {missing[:5]}, unexpected {extra[:5]}')


def compare_tensors(test, ref):
    """Rows ``{name, max_abs, rel, rel_l2, rel_median, cos, ref_max}`` per tensor of the dicts ``ref`` and ``test``.

    The names must agree (``KeyError`` otherwise); rows follow ``ref``'s order.
    """
    _same_names(test, ref)
    rows = []
    for name, r in ref.items():
        t = test[name]
        if np.shape(t) != np.shape(r):
            raise ValueError(f'{name}: shape {np.shape(t)} != reference {np.shape(r)}')
        rows.append(dict(name=name, max_abs=max_abs_err(t, r), rel=rel_err(t, r),
                         rel_l2=rel_l2_err(t, r), rel_median=median_rel_err(t, r), cos=cosine(t, r),
                         ref_max=float(np.max(np.abs(r)))))
    return rows


def max_rel_err(test, ref):
    """The largest ``rel_err`` over the tensors of the dicts ``ref`` and ``test`` (same names, else ``KeyError``)."""
    _same_names(test, ref)
    return max(rel_err(test[k], r) for k, r in ref.items())


def worst(rows, key='rel'):
    """The row with the largest ``key`` (NaN counts as largest)."""
    return max(rows, key=lambda r: np.inf if np.isnan(r[key]) else r[key])


def topk_agreement(test_logits, ref_logits, k=1):
    """Mean over samples of ``|top-k(test) ∩ top-k(ref)| / k``; 1.0 when every top-k set agrees."""
    t = np.argsort(-np.asarray(test_logits), axis=-1)[:, :k]
    r = np.argsort(-np.asarray(ref_logits), axis=-1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(t, r)]))
