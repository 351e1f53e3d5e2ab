"""GRAPH against PYNATIVE mode: one MindSpore model, the same batch, forward and backward.

Every forward stage, the logits, the loss, every parameter gradient and the input gradient
are held to ``MODE_BOUND`` = 1e-6 relative, and on CPU they are bit for bit. That rests on
one property of the model and of ``parity.gradients.loss_cell``: no tensor has more than
two gradient consumers. The two modes add the gradient terms of a tensor in different
orders (GRAPH: one AddN over its consumers in the compiled graph's order; PYNATIVE: a
running sum as the terms arrive), which for three or more terms rounds differently
(``fan_in_orders``; docs/parity.md, GRAPH vs PYNATIVE).
"""
import numpy as np

from tnt_common.compare import compare_stages, compare_tensors, max_abs_err, rel_err

MODE_BOUND = 1e-6


def compare_modes(runs, bound=MODE_BOUND):
    """Report of graph against pynative: forward stages and logits, loss, input and weight gradients."""
    (fg, gg), (fp, gp) = runs['graph'], runs['pynative']
    stage_rows = compare_stages(fg[1], fp[1])
    grad_rows = compare_tensors(gg[1], gp[1])
    extra = [dict(name='logits', max_abs=max_abs_err(fg[0], fp[0]), rel=rel_err(fg[0], fp[0])),
             dict(name='loss', max_abs=max_abs_err(gg[0], gp[0]), rel=rel_err(gg[0], gp[0]))]
    input_row = dict(name='input grad', max_abs=max_abs_err(gg[2], gp[2]), rel=rel_err(gg[2], gp[2]))
    forward = [(f"{r['stage']} {r['stream']}", r) for r in stage_rows] + [(r['name'], r) for r in extra]
    backward = [(f"grad {r['name']}", r) for r in grad_rows] + [('input grad', input_row)]
    every = forward + backward
    return dict(stage_rows=stage_rows, grad_rows=grad_rows, extra=extra + [input_row], bound=bound,
                forward_bit_exact=all(r['max_abs'] == 0 for _, r in forward),
                bit_exact=all(r['max_abs'] == 0 for _, r in every),
                not_bit_exact=[name for name, r in every if r['max_abs'] != 0],
                worst=max(every, key=lambda nr: nr[1]['rel']),
                failing=[name for name, r in every if not r['rel'] <= bound],
                passed=all(r['rel'] <= bound for _, r in every))


def describe_modes(report):
    name, row = report['worst']
    if report['bit_exact']:
        state = 'bit for bit'
    else:
        state = (f"{len(report['not_bit_exact'])} tensor(s) not bit for bit "
                 f"({', '.join(report['not_bit_exact'][:4])}), worst {name} rel {row['rel']:.2e}")
    verdict = 'agree' if report['passed'] else f"differ in {', '.join(report['failing'][:4])}"
    return f"graph and pynative {verdict}: {state} (bound {report['bound']:.0e})"


def fan_in_orders(n=1 << 16, seed=0):
    """The cause, in one cell: ``x`` feeds two or three products; d/dx in each mode.

    Returns ``{consumers: {mode: association}}``, the association (e.g. '(1+2)+3') of the
    gradient terms ``w_i`` that reproduces that mode's d/dx bit for bit, or '?' if none
    does; and the fraction of elements in which the three-term associations differ.
    """
    import mindspore as ms
    from mindspore import nn
    from parity.forward import set_mode

    class Products(nn.Cell):
        def construct(self, x, ws):
            out = ()
            for w in ws:
                out = out + (x * w,)
            return out

    rng = np.random.default_rng(seed)
    x, *w = (rng.standard_normal(n).astype(np.float32) for _ in range(4))
    candidates = {2: {'1+2': w[0] + w[1]},
                  3: {'(1+2)+3': (w[0] + w[1]) + w[2], '(1+3)+2': (w[0] + w[2]) + w[1],
                      '1+(2+3)': w[0] + (w[1] + w[2])}}
    orders = {}
    for k, sums in candidates.items():
        for mode in ('pynative', 'graph'):
            set_mode(mode)
            grad = ms.grad(Products(), grad_position=0)(ms.Tensor(x), tuple(ms.Tensor(a) for a in w[:k]))
            g = grad.asnumpy()
            orders.setdefault(k, {})[mode] = next((s for s, v in sums.items() if np.array_equal(g, v)), '?')
    differ = float(np.mean(candidates[3]['(1+2)+3'] != candidates[3]['1+(2+3)']))
    return orders, differ
