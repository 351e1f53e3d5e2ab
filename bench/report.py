"""Goals and the Markdown table of a benchmark run (pure functions of the results)."""

NAMES = {'ms-graph': 'MindSpore graph', 'ms-pynative': 'MindSpore PyNative', 'torch': 'torch_ref eager'}
TASK_TITLES = {'infer': 'Inference', 'train': 'Training step (forward + backward + AdamW)'}
GOAL_MODEL = 'tnt_s_patch16_224'
GOAL_BATCH = 8


def _find(rows, task, label='ms-graph'):
    return next((r for r in rows if (r['task'], r['label'], r['model'], r['batch'])
                 == (task, label, GOAL_MODEL, GOAL_BATCH) and 'error' not in r), None)


def goals(rows):
    """The performance goals: target, measured value (None if not run), verdict.

    Ratios are judged on the best steps (least disturbed by other load); the median-based
    ratio is given beside them."""
    infer, train = _find(rows, 'infer'), _find(rows, 'train')
    compiled = infer or next((r for r in rows if r['label'] == 'ms-graph' and r['model'] == GOAL_MODEL
                              and r['task'] == 'infer' and r.get('compile_s') is not None), None)
    measured = [
        ('TNT-S inference, batch 8: MindSpore graph / torch_ref eager img/s', '>=', 0.8, infer, 'vs_torch'),
        ('TNT-S training step, batch 8: MindSpore graph / torch_ref eager img/s', '>=', 0.6, train, 'vs_torch'),
        ('TNT-S graph compile (inference graph), s', '<=', 30., compiled, 'compile_s'),
    ]
    out = []
    for name, op, target, row, key in measured:
        if key == 'vs_torch':
            value, median = (row.get('vs_torch_best'), row.get('vs_torch_median')) if row else (None, None)
        else:
            value, median = (row.get(key) if row else None), None
        met = None if value is None else (value >= target if op == '>=' else value <= target)
        out.append(dict(goal=name, target=f'{op} {target:g}', measured=value, median=median, met=met))
    return out


def _label(row):
    name = NAMES[row['variant']]
    return name + (f" @ {row['label'].split('@', 1)[1]}" if '@' in row['label'] else '')


def _fmt(value, spec, missing='–'):
    return missing if value is None else format(value, spec)


def _row(r):
    if 'error' in r:
        return f"| {r['model']} | {r['batch']} | {_label(r)} | failed: {r['error']} | | | | | |"
    if r['variant'] == 'torch':
        ratio = 'reference'
    elif 'vs_torch_best' in r:
        ratio = f"{r['vs_torch_best']:.2f} ({r['vs_torch_median']:.2f})"
    else:
        ratio = '–'
    return (f"| {r['model']} | {r['batch']} | {_label(r)} | {r['img_s_best']:.2f} ({r['img_s_median']:.2f}) "
            f"| {1e3 * r['step_s_min']:.0f} ({1e3 * r['step_s_median']:.0f}) | {ratio} "
            f"| {_fmt(r.get('compile_s'), '.1f')} | {r['peak_rss_mib']:.0f} ({r['peak_rss_mib'] - r['rss_import_mib']:.0f}) "
            f"| {_fmt(r.get('others_cpu_mean') and 100 * r['others_cpu_mean'], '.0f')} |")


def markdown(results):
    run, m = results['run'], results['run']['machine']
    loads = [r['load_average_1min'] for r in results['rows']]
    lines = [
        '# TNT benchmarks: MindSpore next to torch_ref',
        '',
        f"`{run['command']}`: {run['date']}, revision `{m['revision']}`, {run['duration_s'] / 60:.1f} min. "
        f"{m['cpu']}, {m['usable_cores']} of {m['logical_cores']} cores, {m['memory_gib']} GiB; {m['os']}; "
        f"Python {m['python']}, MindSpore {m['mindspore']}, torch {m['torch']}, numpy {m['numpy']}. "
        f"Load average (1/5/15 min) {'/'.join(map(str, run['load_average_before']))} before, "
        f"{'/'.join(map(str, run['load_average_after']))} after"
        + (f"; 1-min load {min(loads):g} to {max(loads):g} at the start of the row groups." if loads else '.'),
        '',
        f"Each configuration runs in its own process: graph compile, first call, {run['warmup']} more "
        f"warm-up call(s), then {run['repeats']} timed steps, each MindSpore step alternating with a torch_ref step "
        f"and each started once the rest of the machine was quiet (waiting at most {run['quiet_wait_s']:g} s). "
        'img/s = batch / step time, best (median); "vs torch" = img/s over torch_ref\'s in the same '
        'rounds, best (median). Peak RSS is the whole process (its growth after importing the '
        'framework in parentheses). "others\' CPU" is the mean share of all cores that other '
        'processes used during the timed steps. The machine is shared and absolute numbers are '
        'noisy; read the ratios, and the best more than the median.' + (f" MindSpore model arguments: `{run['ms_kwargs']}`." if run['ms_kwargs'] else ''),
        '',
        '## Goals',
        '',
        '| goal | target | measured best (median) | met |',
        '|---|---|---|---|',
    ]
    for g in results['goals']:
        verdict = {True: 'yes', False: 'no', None: 'not run'}[g['met']]
        median = f" ({g['median']:.2f})" if g['median'] is not None else ''
        lines.append(f"| {g['goal']} | {g['target']} | {_fmt(g['measured'], '.2f')}{median} | {verdict} |")
    for task, title in TASK_TITLES.items():
        rows = [r for r in results['rows'] if r['task'] == task]
        if rows:
            lines += ['', f'## {title}', '',
                      '| model | batch | variant | img/s | step ms | vs torch | compile s | peak RSS MiB '
                      '| others\' CPU % |', '|---|---|---|---|---|---|---|---|---|']
            lines += [_row(r) for r in rows]
    return '\n'.join(lines) + '\n'
