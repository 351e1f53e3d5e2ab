"""Run the benchmarks side by side and write the Markdown table and the JSON results.

Every configuration (framework and mode, task, model, batch) runs in a fresh worker
process (``bench.worker``), so compile times and peak memory never mix; ``bench.timing``
pairs each MindSpore configuration's steps with torch_ref steps taken in the same rounds,
each after waiting for the machine to be quiet.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

from bench.machine import git_revision, machine_facts
from bench.report import goals, markdown
from bench.timing import GroupTimer
from tnt_common.variants import list_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    'ms-graph': ('mindspore', 'graph'),
    'ms-pynative': ('mindspore', 'pynative'),
    'torch': ('torch', 'eager'),
}
TASKS = ('infer', 'train')
DEFAULT_OUT = os.path.join(ROOT, 'bench', 'results', 'latest')
SCOPE = ('models', 'batches', 'tasks', 'variants', 'train_pynative', 'ms_kwargs', 'against')   # of a full run


def other_source(ref, workdir):
    """(tag, path) of the models of ``ref`` (a git revision or another checkout's directory),
    set up beside this checkout's ``bench`` so the same harness measures them."""
    dest = tempfile.mkdtemp(prefix='bench-src-', dir=workdir)
    if os.path.isdir(ref):
        tree, tag = os.path.abspath(ref), os.path.basename(os.path.abspath(ref).rstrip('/'))
        for entry in os.listdir(tree):
            if entry != 'bench':
                os.symlink(os.path.join(tree, entry), os.path.join(dest, entry))
    else:
        tag = ref
        archive = subprocess.run(['git', '-C', ROOT, 'archive', ref], capture_output=True, check=True).stdout
        subprocess.run(['tar', '-x', '-C', dest, '--exclude=bench'], input=archive, check=True)
    os.symlink(os.path.join(ROOT, 'bench'), os.path.join(dest, 'bench'))
    return tag, dest


def make_specs(args, sources):
    """Row groups: for each task, model and batch, one spec per variant (and per source)."""
    groups = []
    for task in args.tasks:
        for model in args.models:
            for batch in args.batches:
                group = []
                for variant in args.variants:
                    framework, mode = VARIANTS[variant]
                    if task == 'train' and mode == 'pynative' and not args.train_pynative:
                        continue
                    for tag, source in sources:
                        if tag and framework != 'mindspore':
                            continue
                        group.append(dict(
                            label=variant + (f'@{tag}' if tag else ''), variant=variant, framework=framework,
                            mode=mode, task=task, model=model, batch=batch, source=source,
                            revision=tag or git_revision(ROOT), warmup=args.warmup,
                            model_kwargs=args.ms_kwargs if framework == 'mindspore' else {}))
                groups.append(group)
    return groups


def _csv(kind, choices=None):
    def parse(text):
        items = [kind(t) for t in text.split(',') if t]
        bad = [t for t in items if choices is not None and t not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(f'{text!r}: choose from {", ".join(map(str, choices))}'
                                             if bad else 'empty list')
        return items
    return parse


def _kwarg(text):
    key, sep, value = text.partition('=')
    if not sep or not key:
        raise argparse.ArgumentTypeError(f'{text!r}: expected KEY=VALUE')
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='python -m bench', description=__doc__.split('\n\n')[0])
    p.add_argument('--models', type=_csv(str, list_models()), default=['tnt_s_patch16_224', 'tnt_b_patch16_224'],
                   help='comma-separated variants (default tnt_s_patch16_224,tnt_b_patch16_224)')
    p.add_argument('--batches', type=_csv(int), default=[1, 8], help='comma-separated batch sizes (default 1,8)')
    p.add_argument('--tasks', type=_csv(str, TASKS), default=list(TASKS), help='infer, train or both (default)')
    p.add_argument('--variants', type=_csv(str, list(VARIANTS)), default=list(VARIANTS),
                   help=f'comma-separated, default all: {", ".join(VARIANTS)}')
    p.add_argument('--repeats', type=int, default=5, help='timed steps per configuration (default 5)')
    p.add_argument('--warmup', type=int, default=2, help='untimed calls after the first (default 2)')
    p.add_argument('--no-train-pynative', dest='train_pynative', action='store_false',
                   help='skip MindSpore PyNative training steps (the slowest rows)')
    p.add_argument('--ms-arg', dest='ms_kwargs', type=_kwarg, action='append', default=[],
                   metavar='KEY=VALUE', help='extra mindspore_tnt.create_model argument, e.g. impl=standard')
    p.add_argument('--against', metavar='REV_OR_DIR', action='append', default=[],
                   help='also run the MindSpore variants with the models of a git revision or of another '
                        'checkout (before/after comparisons); repeatable')
    p.add_argument('--quiet-wait', type=float, default=30., metavar='S',
                   help='before each step, wait up to S seconds for the rest of the machine to go quiet '
                        '(default 30; 0: do not wait)')
    p.add_argument('--min-free-gib', type=float, default=1.5,
                   help='stop a worker when the machine has less memory available (default 1.5)')
    p.add_argument('--quick', action='store_true',
                   help='TNT-S at batch 8 only, 3 rounds, 1 warm-up call, no PyNative training; nothing saved '
                        'unless --out is given')
    p.add_argument('--out', metavar='PREFIX', help=f'write PREFIX.md and PREFIX.json (default: {DEFAULT_OUT} '
                                                    'for a run of the default configurations that all succeed)')
    args = p.parse_args(argv)
    defaults = p.parse_args([])
    if args.quick:
        for name, value in (('models', ['tnt_s_patch16_224']), ('batches', [8]), ('repeats', 3), ('warmup', 1),
                            ('train_pynative', False)):
            if getattr(args, name) == getattr(defaults, name):
                setattr(args, name, value)
    if args.repeats < 1 or args.warmup < 0 or args.quiet_wait < 0:
        p.error('--repeats must be >= 1, --warmup and --quiet-wait >= 0')
    args.full_run = not args.quick and all(getattr(args, k) == getattr(defaults, k) for k in SCOPE)
    args.ms_kwargs = dict(args.ms_kwargs)
    return args


def write_atomically(path, text):
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with tempfile.NamedTemporaryFile('w', dir=os.path.dirname(path) or '.', delete=False) as f:
        f.write(text)
    os.replace(f.name, path)


def main(argv=None):
    args = parse_args(argv)
    echo = lambda msg: print(msg, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix='bench-') as workdir:
        sources = [(None, ROOT)]
        for ref in args.against:
            try:
                sources.append(other_source(ref, workdir))
            except subprocess.CalledProcessError:
                sys.exit(f'bench: error: {ref!r} is neither a directory nor a git revision')
        started = time.time()
        load_before = os.getloadavg()
        timer = GroupTimer(args.repeats, workdir, args.min_free_gib, args.quiet_wait, echo)
        rows = []
        for group in make_specs(args, sources):
            head = group[0]
            echo(f"{head['task']} {head['model']} batch {head['batch']}:")
            rows += timer.run_group(group)
    run = dict(
        command=' '.join(['python -m bench'] + (sys.argv[1:] if argv is None else list(argv))),
        date=datetime.datetime.fromtimestamp(started).isoformat(timespec='seconds'),
        duration_s=round(time.time() - started, 1),
        load_average_before=[round(v, 2) for v in load_before],
        load_average_after=[round(v, 2) for v in os.getloadavg()],
        repeats=args.repeats, warmup=args.warmup, quiet_wait_s=args.quiet_wait, ms_kwargs=args.ms_kwargs,
        machine=machine_facts(ROOT),
    )
    results = dict(run=run, goals=goals(rows), rows=rows)
    table = markdown(results)
    echo('\n' + table)
    failed = any('error' in row for row in rows)
    out = args.out or (DEFAULT_OUT if args.full_run and not failed else None)
    if out:
        write_atomically(out + '.json', json.dumps(results, indent=1) + '\n')
        write_atomically(out + '.md', table)
        echo(f'wrote {out}.md and {out}.json')
    elif args.full_run:
        echo(f'not written to {DEFAULT_OUT}.*: a configuration failed')
    if failed:
        sys.exit(1)
