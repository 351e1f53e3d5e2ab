"""The parity report: forward per block, logits, gradients, verdict; as text, JSON, Markdown, PNG."""
import json
import os

import numpy as np

from tnt_common.files import atomic_output, figure


def build_report(model=None, checkpoint=None, mode='graph', dtype='fp32', batch=2, seed=0, numerics=None):
    """Run both frameworks on the same weights and batch; return the report as a plain dict.

    ``checkpoint``: a file any ``convert`` reader reads (variant and numerics detected
    unless ``model`` / ``numerics`` are given); without it, random weights
    (``tnt_common.fixtures``) of ``model``, with ``numerics`` (default PyTorch's).
    """
    from tnt_common.numerics import parse
    from tnt_common.fixtures import make_batch
    from parity.forward import random_models, random_pyramid_models, set_mode
    from tnt_common.variants import family
    from torch_ref.outputs import torch_outputs
    from parity.gradients import (compare_gradients, make_labels, mindspore_gradients, torch_gradients,
                                  zero_gradient_scales)
    from parity.precision import DTYPE_LEVELS, compare_precision, mindspore_outputs
    from mindspore_tnt.amp import apply_amp
    level = DTYPE_LEVELS[dtype]
    set_mode(mode)
    if checkpoint:
        from convert import load_mindspore_into_torch, load_torch_into_mindspore
        from convert.api import read_hub
        model = model or read_hub(checkpoint)[0].variant
        net = load_torch_into_mindspore(checkpoint, model_name=model, numerics=numerics)
        torch_model = load_mindspore_into_torch(checkpoint, model_name=model, numerics=numerics)
    else:
        make = random_pyramid_models if family(model) == 'ptnt' else random_models
        torch_model, net = make(model, seed, **parse(numerics or 'pytorch').model_kwargs())
    pyramid = family(model) == 'ptnt'
    if pyramid and dtype != 'fp32':
        raise ValueError(f'{model}: mixed precision is not done for PyramidTNT yet (docs/ptnt.md); compare it in fp32')
    if pyramid:
        from convert.keymap import PYRAMID_TO_MINDSPORE as keymap
        img_size = 8 * torch_model.patch_embed.grid_size[0]
        names = torch_model.stage_names()
    else:
        keymap, names = None, None
        img_size = torch_model.pixel_embed.grid_size[0] * torch_model.pixel_embed.patch_size
    x = make_batch(batch, img_size, seed)
    y = make_labels(batch, max(torch_model.num_classes, 1), seed)
    forward = compare_precision(mindspore_outputs(net, x, level), torch_outputs(torch_model, x), level, names)
    wrap = None if level == 'O0' else (lambda cell: apply_amp(cell, level))
    grads = compare_gradients(mindspore_gradients(net, x, y, wrap=wrap, keymap=keymap),
                              torch_gradients(torch_model, x, y), bound=forward['bounds']['grad_rel'],
                              scales=zero_gradient_scales(torch_model))
    return dict(variant=model, checkpoint=checkpoint, mode=mode, numerics=net.numerics.describe(),
                dtype=dtype, amp_level=level, batch=batch, seed=seed, img_size=img_size,
                forward=forward, gradients=grads, passed=forward['passed'] and grads['passed'])


def stage_table(rows):
    """[(stage, inner row, outer row)] in forward order, named as the rows name them."""
    inner = [r for r in rows if r['stream'] == 'inner']
    outer = [r for r in rows if r['stream'] == 'outer']
    return [(i['stage'], i, o) for i, o in zip(inner, outer)]


def verdict_lines(report):
    f, g = report['forward'], report['gradients']
    b = f['bounds']
    mark = lambda ok: 'ok' if ok else 'FAIL'
    return [
        f"forward stages: worst rel err {f['stage_worst']:.3e} <= {b['stage_rel']:.1e}: {mark(f['checks']['stage_rel'])}",
        f"logits cosine {f['logits_cos']:.9f} >= {b['logits_cos']}: {mark(f['checks']['logits_cos'])}",
        f"top-1 agreement {f['top1']:.3f} >= {b['top1']}: {mark(f['checks']['top1'])}",
        f"gradients: worst rel err {g['worst']['rel']:.3e} ({g['worst']['name']}), input {g['input']['rel']:.3e}, "
        f"loss {g['loss_rel']:.3e} <= {g['bound']:.1e}: {mark(g['passed'])}",
    ]


def format_text(report):
    """The console report."""
    f, g = report['forward'], report['gradients']
    head = (f"{report['variant']} ({report['checkpoint'] or 'random weights, seed %d' % report['seed']}): "
            f"MindSpore {report['mode']} {report['dtype']} ({report['amp_level']}) vs torch_ref fp32, "
            f"batch {report['batch']}")
    w = max([9] + [len(name) for name, _, _ in stage_table(f['rows'])])
    lines = [head, f"numerics: {report['numerics']}", '',
             f"{'stage':<{w}} | {'inner max|d|':>12} {'rel':>9} {'cosine':>12} | "
             f"{'outer max|d|':>12} {'rel':>9} {'cosine':>12}"]
    lines.append('-' * len(lines[-1]))
    for stage, i, o in stage_table(f['rows']):
        lines.append(f"{stage:<{w}} | {i['max_abs']:>12.3e} {i['rel']:>9.2e} {i['cos']:>12.9f} | "
                     f"{o['max_abs']:>12.3e} {o['rel']:>9.2e} {o['cos']:>12.9f}")
    lines += ['',
              f"logits: rel err {f['logits_rel']:.3e}, cosine {f['logits_cos']:.9f}, "
              f"top-1 agreement {f['top1']:.3f}, top-5 agreement {f['top5']:.3f}",
              f"gradients ({len(g['rows'])} tensors + input): loss {g['loss']:.6f} vs {g['loss_ref']:.6f}; "
              f"worst {g['worst']['name']} rel {g['worst']['rel']:.3e} cos {g['worst']['cos']:.7f}; "
              f"input rel {g['input']['rel']:.3e}; failing: {len(g['failing'])}"]
    zero = [r for r in g['rows'] if 'scale_of' in r]
    if zero:
        lines.append(f"  {len(zero)} conv biases feed a BatchNorm (zero gradient up to rounding), judged against "
                     f"their weight gradient's scale: worst {max(r['scale_rel'] for r in zero):.3e}")
    lines.append('')
    lines += verdict_lines(report)
    lines.append('PASS' if report['passed'] else 'FAIL')
    return '\n'.join(lines)


def format_markdown(report):
    f, g = report['forward'], report['gradients']
    out = [f"# Parity report: {report['variant']}", '',
           f"MindSpore `{report['mode']}` `{report['dtype']}` (AMP {report['amp_level']}) against torch_ref fp32; "
           f"batch {report['batch']}, seed {report['seed']}, "
           f"weights: {('`%s`' % report['checkpoint']) if report['checkpoint'] else 'random'}; "
           f"numerics: {report['numerics']}.", '',
           f"**{'PASS' if report['passed'] else 'FAIL'}**", '']
    out += [f'- {line}' for line in verdict_lines(report)]
    out += ['', '## Per block', '',
            '| stage | inner max\\|d\\| | inner rel | inner cosine | outer max\\|d\\| | outer rel | outer cosine |',
            '|---|---|---|---|---|---|---|']
    for stage, i, o in stage_table(f['rows']):
        out.append(f"| {stage} | {i['max_abs']:.3e} | {i['rel']:.2e} | {i['cos']:.9f} | "
                   f"{o['max_abs']:.3e} | {o['rel']:.2e} | {o['cos']:.9f} |")
    out += ['', '## Logits', '',
            f"rel err {f['logits_rel']:.3e}, cosine {f['logits_cos']:.9f}, top-1 agreement {f['top1']:.3f}, "
            f"top-5 agreement {f['top5']:.3f}", '', '## Gradients', '',
            f"loss {g['loss']:.6f} (torch {g['loss_ref']:.6f}); input gradient rel err {g['input']['rel']:.3e}.", '',
            '| tensor | max\\|d\\| | rel | cosine |', '|---|---|---|---|']
    for r in sorted(g['rows'], key=lambda r: -r['rel'])[:10]:
        out.append(f"| {r['name']} | {r['max_abs']:.3e} | {r['rel']:.2e} | {r['cos']:.7f} |")
    out.append(f"\n(the 10 largest of {len(g['rows'])} tensors; all are in the JSON report)")
    return '\n'.join(out) + '\n'


def plot_depth(report, path):
    """PNG of relative error against depth, inner and outer tokens, log scale, with the bound."""
    table = stage_table(report['forward']['rows'])
    xs = np.arange(len(table))
    floor = 1e-12  # an exact match has no place on a log axis
    fig = figure(figsize=(8, 4.5), dpi=110)
    ax = fig.subplots()
    for k, (label, marker) in enumerate((('inner tokens (words)', 'o'), ('outer tokens (sentences)', 's'))):
        ax.plot(xs, [max(row[k + 1]['rel'], floor) for row in table], marker=marker, label=label)
    ax.axhline(report['forward']['bounds']['stage_rel'], color='red', linestyle='--',
               label=f"bound {report['forward']['bounds']['stage_rel']:.1e}")
    if any(row[k]['rel'] == 0 for row in table for k in (1, 2)):
        ax.annotate(f'an exact match (0) is drawn at {floor:.0e}', xy=(0.01, 0.01), xycoords='axes fraction',
                    fontsize=8, color='gray')
    ax.set_yscale('log')
    ax.set_xticks(xs)
    ax.set_xticklabels([row[0].replace('stage ', 's').replace('block ', 'b') for row in table], rotation=45)
    ax.set_xlabel('stage (embedding, then block index; PyramidTNT: stem, stage/block, merges)')
    ax.set_ylabel('relative error  max|ms - pt| / max|pt|')
    ax.set_title(f"{report['variant']}: MindSpore {report['mode']} {report['dtype']} vs torch fp32")
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(loc='best', fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def _json_ready(obj):
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    return obj


def write_outputs(report, out_dir):
    """Write ``<stem>.json``, ``.md`` and ``.png`` into ``out_dir``; each file appears whole or not at all."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"parity_{report['variant']}_{report['mode']}_{report['dtype']}")
    writers = {'.json': lambda p: _write_text(p, json.dumps(_json_ready(report), indent=1)),
               '.md': lambda p: _write_text(p, format_markdown(report)),
               '.png': lambda p: plot_depth(report, p)}
    paths = []
    try:
        for ext, write in writers.items():
            with atomic_output(stem + ext) as tmp:
                write(tmp)
            paths.append(stem + ext)
    except BaseException:   # the three files, or none
        for path in paths:
            os.unlink(path)
        raise
    return paths


def _write_text(path, text):
    with open(path, 'w') as f:
        f.write(text)
