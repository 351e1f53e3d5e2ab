"""GRAPH against PYNATIVE mode: one MindSpore model, the same batch, forward and backward.

Both modes run the same kernels on CPU, so the results are expected bit for bit; the
bound allows ``MODE_BOUND`` relative error for a backend that fuses differently.
"""
from tnt_common.compare import compare_stages, compare_tensors, max_abs_err, rel_err

MODE_BOUND = 1e-6


def run_modes(net, x, y):
    """{'graph': (forward outputs, gradients), 'pynative': ...} of one MindSpore TNT."""
    from parity.forward import mindspore_outputs, set_mode
    from parity.gradients import mindspore_gradients
    out = {}
    for mode in ('pynative', 'graph'):
        set_mode(mode)
        out[mode] = (mindspore_outputs(net, x), mindspore_gradients(net, x, y))
    return out


def compare_modes(runs, bound=MODE_BOUND):
    """Report of graph against pynative: forward stages and logits, loss, input and weight gradients."""
    (fg, gg), (fp, gp) = runs['graph'], runs['pynative']
    stage_rows = compare_stages(fg[1], fp[1])
    grad_rows = compare_tensors(gg[1], gp[1])
    extra = [dict(name='logits', max_abs=max_abs_err(fg[0], fp[0]), rel=rel_err(fg[0], fp[0])),
             dict(name='loss', max_abs=max_abs_err(gg[0], gp[0]), rel=rel_err(gg[0], gp[0])),
             dict(name='input grad', max_abs=max_abs_err(gg[2], gp[2]), rel=rel_err(gg[2], gp[2]))]
    every = ([(f"{r['stage']} {r['stream']}", r) for r in stage_rows] +
             [(r['name'], r) for r in extra] + [(f"grad {r['name']}", r) for r in grad_rows])
    failing = [name for name, r in every if not r['rel'] <= bound]
    return dict(stage_rows=stage_rows, grad_rows=grad_rows, extra=extra, bound=bound,
                bit_exact=all(r['max_abs'] == 0 for _, r in every),
                worst=max(every, key=lambda nr: nr[1]['rel']), failing=failing, passed=not failing)


def describe_modes(report):
    name, row = report['worst']
    state = 'bit for bit' if report['bit_exact'] else f"worst {name} rel {row['rel']:.2e}"
    verdict = 'agree' if report['passed'] else f"differ in {', '.join(report['failing'][:4])}"
    return f"graph and pynative {verdict}: {state} (bound {report['bound']:.0e})"
