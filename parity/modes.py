"""GRAPH against PYNATIVE mode: one MindSpore model, the same batch, forward and backward.

Forward (every stage, logits, loss): within ``MODE_BOUND`` = 1e-6 relative; on CPU it is
bit for bit. Backward: GRAPH mode compiles the backward pass with its own fusions and
reduction orders, and gradients differ from PYNATIVE's in the last few fp32 bits
(measured up to 1.5e-6 relative per tensor, docs/parity.md); they are held to
``MODE_GRAD_BOUND`` = 1e-5, ten times tighter than the cross-framework gradient bound.
"""
from tnt_common.compare import compare_stages, compare_tensors, max_abs_err, rel_err

MODE_BOUND = 1e-6
MODE_GRAD_BOUND = 1e-5


def run_modes(net, x, y):
    """{'graph': (forward outputs, gradients), 'pynative': ...} of one MindSpore TNT."""
    from parity.forward import mindspore_outputs, set_mode
    from parity.gradients import mindspore_gradients
    out = {}
    for mode in ('pynative', 'graph'):
        set_mode(mode)
        out[mode] = (mindspore_outputs(net, x), mindspore_gradients(net, x, y))
    return out


def compare_modes(runs, bound=MODE_BOUND, grad_bound=MODE_GRAD_BOUND):
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
    failing = ([name for name, r in forward if not r['rel'] <= bound] +
               [name for name, r in backward if not r['rel'] <= grad_bound])
    return dict(stage_rows=stage_rows, grad_rows=grad_rows, extra=extra + [input_row], bound=bound,
                grad_bound=grad_bound, forward_bit_exact=all(r['max_abs'] == 0 for _, r in forward),
                bit_exact=all(r['max_abs'] == 0 for _, r in every),
                worst=max(every, key=lambda nr: nr[1]['rel']), failing=failing, passed=not failing)


def describe_modes(report):
    name, row = report['worst']
    state = 'bit for bit' if report['bit_exact'] else (
        f"forward {'bit for bit' if report['forward_bit_exact'] else 'not bit for bit'}, worst {name} rel {row['rel']:.2e}")
    verdict = 'agree' if report['passed'] else f"differ in {', '.join(report['failing'][:4])}"
    return (f"graph and pynative {verdict}: {state} (bounds: forward {report['bound']:.0e}, "
            f"gradients {report['grad_bound']:.0e})")
