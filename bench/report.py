"""Goals and the Markdown table of a benchmark run (pure functions of the results)."""

NAMES = {'ms-graph': 'MindSpore graph', 'ms-pynative': 'MindSpore PyNative', 'torch': 'torch_ref eager'}
TASK_TITLES = {'infer': 'Inference', 'train': 'Training step (forward + backward + AdamW)'}
GOAL_MODEL, GOAL_BATCH = 'tnt_s_patch16_224', 8


def goals(rows):
    """The performance goals (TNT-S, batch 8, MindSpore graph against torch_ref eager): target,
    measured value (None if not run), verdict. Speed ratios are judged on the best steps (least
    disturbed by other load), the median-based ratio given beside them; memory on the peak RSS."""
    ok = {(r['variant'], r['task']): r for r in rows
          if r['model'] == GOAL_MODEL and r['batch'] == GOAL_BATCH and 'error' not in r}
    infer, train, torch_train = (ok.get(k, {}) for k in (('ms-graph', 'infer'), ('ms-graph', 'train'),
                                                          ('torch', 'train')))
    rss = train.get('peak_rss_mib') and torch_train.get('peak_rss_mib') and \
        train['peak_rss_mib'] / torch_train['peak_rss_mib']
    return [dict(goal=f'TNT-S batch {GOAL_BATCH}: {name}', target=f'{op} {target:g}', measured=value, median=median,
                 met=None if value is None else value >= target if op == '>=' else value <= target)
            for name, op, target, value, median in (
                ('inference img/s, MindSpore / torch_ref', '>=', 1.0, infer.get('vs_torch_best'),
                 infer.get('vs_torch_median')),
                ('training step img/s, MindSpore / torch_ref', '>=', 0.8, train.get('vs_torch_best'),
                 train.get('vs_torch_median')),
                ('training peak RSS, MindSpore / torch_ref', '<=', 2.0, rss, None),
                ('training graph compile, s', '<=', 20., train.get('compile_s'), None))]


def _fmt(value, spec):
    return '–' if value is None else format(value, spec)


def md_table(header, lines):
    return ['', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)] + lines


def _goal(g):  # three decimals: a value just under its target does not read as on it
    median = '' if g['median'] is None else f" ({g['median']:.3f})"
    verdict = {True: 'yes', False: 'no', None: 'not run'}[g['met']]
    return f"| {g['goal']} | {g['target']} | {_fmt(g['measured'], '.3f')}{median} | {verdict} |"


def _row(r):
    head = f"| {r['model']} | {r['batch']} | {NAMES[r['variant']]} | "
    if 'error' in r:
        return head + f"failed: {r['error']} | | | | | |"
    ratio = 'reference' if r['variant'] == 'torch' else (
        f"{r['vs_torch_best']:.2f} ({r['vs_torch_median']:.2f})" if 'vs_torch_best' in r else '–')
    return head + (f"{r['img_s_best']:.2f} ({r['img_s_median']:.2f}) | {1e3 * r['step_s_min']:.0f} "
                   f"({1e3 * r['step_s_median']:.0f}) | {ratio} | {_fmt(r['compile_s'], '.1f')} | "
                   f"{r['peak_rss_mib']:.0f} ({r['peak_rss_mib'] - r['rss_import_mib']:.0f}) | "
                   f"{_fmt(r['others_cpu_mean'] and 100 * r['others_cpu_mean'], '.0f')} |")


def _conversion(r, run):
    if 'error' in r:
        return f"| {r['model']} | | failed: {r['error']} | | | | | |"
    m, no_import = r[run], r[run]['seconds'] - r[run]['import_s']
    label, ratio = ((f"+ verify (passed: {m['passed']})", '') if run == 'verify'
                    else (run, f"{no_import / r['floor']['seconds']:.2f}"))
    return (f"| {r['model']} | {r['direction']} | {label} | {m['seconds']:.2f} ({no_import:.2f}) | {ratio} | "
            f"{m['process_s']:.2f} | {m['peak_rss_mib']:.0f} | {m['peak_rss_mib'] / r['source_mib']:.2f} |")


def markdown(results):
    run, m, rows = results['run'], results['run']['machine'], results['rows']
    loads = [r['load_average_1min'] for r in rows]
    isa = ' '.join(m['isa']) or 'ISA flags unknown'
    cpu = m['cpu'] + (f", {m['cpu_id']}" if m.get('cpu_id') else '')   # results written before cpu_id lack it
    lines = [
        '# TNT benchmarks: MindSpore next to torch_ref', '',
        f"`{run['command']}`: {run['date']}, revision `{m['revision']}`, {run['duration_s'] / 60:.1f} min. "
        f"{cpu}{f' ({isa})' if m['isa'] else ''}, {m['usable_cores']} of {m['logical_cores']} cores, "
        f"{m['memory_gib']} GiB; {m['os']}; "
        f"Python {m['python']}, MindSpore {m['mindspore']}, torch {m['torch']}, numpy {m['numpy']}. Load average "
        f"(1/5/15 min) {'/'.join(map(str, run['load_average_before']))} before, "
        f"{'/'.join(map(str, run['load_average_after']))} after"
        + (f"; 1-min load {min(loads):g} to {max(loads):g} at the start of the row groups." if loads else '.')]
    if rows:
        lines += [
            '', f"Each configuration in its own process: compile, first call, {run['warmup']} more warm-up call(s), "
            f"{run['repeats']} timed steps, each MindSpore step alternating with a torch_ref step, each started once "
            f"the rest of the machine was quiet (waiting at most {run['quiet_wait_s']:g} s). img/s and \"vs torch\" "
            '(img/s over torch_ref\'s in the same rounds): best (median). Peak RSS: the process (its growth after '
            'importing the framework). "others\' CPU": the share of all cores other processes used during the timed '
            'steps. Absolute numbers are noisy; read the ratios, the best more than the median.'
            + (f" MindSpore model arguments: `{run['ms_kwargs']}`." if run['ms_kwargs'] else ''),
            '', '## Goals', '', f"On {cpu} ({isa}), {m['usable_cores']} cores."]
        lines += md_table(('goal', 'target', 'measured best (median)', 'met'), [_goal(g) for g in results['goals']])
    for task, title in TASK_TITLES.items():
        if any(r['task'] == task for r in rows):
            lines += ['', f'## {title}'] + md_table(('model', 'batch', 'variant', 'img/s', 'step ms', 'vs torch',
                                                   'compile s', 'peak RSS MiB', "others' CPU %"),
                                                  [_row(r) for r in rows if r['task'] == task])
    if 'conversion' in results:
        lines += ['', '## Checkpoint conversion', '', (
            'Each run is a fresh process; floor = read the source file and write as many bytes. Time: fastest run '
            '(without `import torch`); peak RSS: `VmHWM`. Goals: conversion <= 1.5x the floor\'s time (without the '
            'import), peak RSS <= 2.5x the checkpoint.')] + md_table(
            ('model', 'direction', 'run', 'time s', 'x floor', 'process s', 'peak RSS MiB', 'x checkpoint'),
            [_conversion(r, run) for r in results['conversion'] for run in ('floor', 'convert', 'verify')
             if run == 'floor' or 'error' not in r])
    return '\n'.join(lines) + '\n'
