"""Run the benchmarks side by side and write the Markdown table and the JSON results.

Every configuration (framework and mode, task, model, batch) runs in a fresh worker process
(``bench.worker``), so compile times and peak memory never mix. In a row group (task, model,
batch) the torch_ref worker stays up while the MindSpore workers run one after another, each
timed in rounds alternating with torch_ref steps; its ratio to torch_ref uses the torch_ref
steps of those rounds. Before each step the worker waits (at most ``--quiet-wait``) for the
rest of the machine to be quiet, and it records the CPU share other processes took during it.
"""
import argparse
import datetime
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

from bench.conversion import run_conversion
from bench.report import goals, markdown
from bench.worker import PREFIX
from tnt_common.cli import parser
from tnt_common.files import atomic_output
from tnt_common.variants import list_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {'ms-graph': ('mindspore', 'graph'), 'ms-pynative': ('mindspore', 'pynative'), 'torch': ('torch', 'eager')}
DEFAULT_OUT = os.path.join(ROOT, 'bench', 'results', 'latest')
SCOPE = ('models', 'batches', 'tasks', 'variants', 'train_pynative', 'ms_kwargs')   # of a full run
ISA = ('sse', 'ssse', 'avx', 'fma', 'f16c', 'amx', 'asimd', 'sve', 'bf16', 'i8mm')   # vector extensions


def machine_facts(revision):
    """The machine and software, without importing the frameworks; ``isa``: the CPU's vector extensions."""
    def proc(path, key):
        try:
            with open(path) as f:
                return next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith(key)), None)
        except OSError:   # not Linux
            return None

    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None
    memory = proc('/proc/meminfo', 'MemTotal')
    flags = proc('/proc/cpuinfo', 'flags') or proc('/proc/cpuinfo', 'Features') or ''
    return dict(cpu=proc('/proc/cpuinfo', 'model name') or platform.processor() or platform.machine(),
                logical_cores=os.cpu_count(),
                usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
                memory_gib=memory and round(int(memory.split()[0]) / 2 ** 20, 1), os=platform.platform(),
                python=platform.python_version(), **{p: version(p) for p in ('mindspore', 'torch', 'numpy')},
                revision=revision, isa=sorted(f for f in flags.split() if f.startswith(ISA)))


class Worker:
    """A ready ``bench.worker`` process for ``row``, its set-up facts merged into the row.

    A worker that fails (here or in ``ask``) sets ``row['error']``."""

    def __init__(self, row, workdir, echo, quiet_wait_s=0.):
        self.row, self.echo, self.log = row, echo, tempfile.TemporaryFile('w+', dir=workdir)
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'bench.worker', json.dumps(row), str(quiet_wait_s)], cwd=workdir, text=True,
            env=dict(os.environ, PYTHONPATH=ROOT, GLOG_v='3'), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log)
        ready = self.ask()
        if ready:
            row.update({k: v for k, v in ready.items() if k != 'ready'}, times_s=[], others_cpu=[])

    def ask(self, command=None):
        """The reply to ``command`` (None: the next reply), or None if the worker failed."""
        try:
            if command:
                self.proc.stdin.write(command + '\n')
                self.proc.stdin.flush()
            reply = next((json.loads(ln[len(PREFIX):]) for ln in self.proc.stdout if ln.startswith(PREFIX)), None)
        except BrokenPipeError:
            reply = None
        if reply is None:
            code = self.proc.wait()
            self.log.seek(0)
            errors = [ln.strip() for ln in self.log if 'Error' in ln]
            self.row['error'] = f'exit code {code}' + (f': {errors[-1]}' if errors else '')
            self.echo(f"  {self.row['label']:<12} FAILED: {self.row['error']}")
        if reply is None or command == 'quit':
            self.proc.kill()
            self.proc.wait()
            self.log.close()
        return reply


def rounds(pairs, repeats):
    """``repeats`` rounds of one step per (row, worker) still running, alternating who goes first."""
    for r in range(repeats):
        for row, worker in (pairs if r % 2 == 0 else pairs[::-1]):
            reply = 'error' not in row and worker.ask('step')
            if reply:
                row['times_s'].append(reply['seconds'])
                row['others_cpu'].append(reply['others_cpu'])


def stop(row, worker, echo):
    """Peak RSS and step statistics into ``row``; the worker ends."""
    reply = 'error' not in row and worker.ask('quit')
    if not reply:
        return
    times, others = row['times_s'], [s for s in row['others_cpu'] if s is not None]
    row.update(reply, step_s_min=min(times), step_s_median=statistics.median(times),
               others_cpu_mean=statistics.mean(others) if others else None)
    row.update(img_s_best=row['batch'] / row['step_s_min'], img_s_median=row['batch'] / row['step_s_median'])
    if row.get('torch_times_s'):
        row.update(vs_torch_median=statistics.median(row['torch_times_s']) / row['step_s_median'],
                   vs_torch_best=min(row['torch_times_s']) / row['step_s_min'])
    echo(f"  {row['label']:<12} {row['img_s_best']:8.2f} img/s best ({row['img_s_median']:.2f} median)  peak RSS "
         f"{row['peak_rss_mib']:.0f} MiB" + (f"  compile {row['compile_s']:.1f} s" if row['compile_s'] else ''))


def run_group(specs, args, workdir, echo):
    """Rows of one group: every spec timed, MindSpore ones paired with torch_ref steps."""
    rows = [dict(spec, load_average_1min=round(os.getloadavg()[0], 2)) for spec in specs]
    ref = next((r for r in rows if r['framework'] == 'torch'), None)
    ref_worker = ref and Worker(ref, workdir, echo, args.quiet_wait)
    for row in (r for r in rows if r is not ref):
        worker = Worker(row, workdir, echo, args.quiet_wait)
        paired = ref is not None and 'error' not in ref
        first = len(ref['times_s']) if paired else 0
        rounds([(row, worker)] + ([(ref, ref_worker)] if paired else []), args.repeats)
        if paired and 'error' not in ref:
            row['torch_times_s'] = ref['times_s'][first:]
        stop(row, worker, echo)
    if ref is not None:
        if 'error' not in ref and not ref['times_s']:
            rounds([(ref, ref_worker)], args.repeats)
        stop(ref, ref_worker, echo)
    return rows


def csv_list(kind, choices=None):
    def parse(text):
        items = [kind(t) for t in text.split(',') if t]
        if not items or choices and set(items) - set(choices):
            raise argparse.ArgumentTypeError(f'{text!r}: choose from {", ".join(choices)}' if items else 'empty')
        return items
    return parse


def key_value(text):
    key, sep, value = text.partition('=')
    if not sep or not key:
        raise argparse.ArgumentTypeError(f'{text!r}: expected KEY=VALUE')
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_args(argv=None):
    p = parser('python -m bench', __doc__.split('\n\n')[0])
    p.add_argument('--models', type=csv_list(str, list_models(None)), default=['tnt_s_patch16_224', 'tnt_b_patch16_224'],
                   help='comma-separated (default tnt_s_patch16_224,tnt_b_patch16_224)')
    p.add_argument('--batches', type=csv_list(int), default=[1, 8], help='comma-separated batch sizes (default 1,8)')
    p.add_argument('--tasks', type=csv_list(str, ('infer', 'train', 'convert')), default=['infer', 'train'],
                   help='comma-separated: infer, train (default: both), convert (checkpoint conversion)')
    p.add_argument('--variants', type=csv_list(str, list(VARIANTS)), default=list(VARIANTS),
                   help=f'comma-separated, default all: {", ".join(VARIANTS)}')
    p.add_argument('--repeats', type=int, default=5, help='timed steps (conversion runs) per configuration (5)')
    p.add_argument('--warmup', type=int, default=2, help='untimed calls after the first (default 2)')
    p.add_argument('--no-train-pynative', dest='train_pynative', action='store_false',
                   help='skip MindSpore PyNative training steps (the slowest rows)')
    p.add_argument('--ms-arg', dest='ms_kwargs', type=key_value, action='append', default=[], metavar='KEY=VALUE',
                   help='extra mindspore_tnt.create_model argument, e.g. impl=standard')
    p.add_argument('--quiet-wait', type=float, default=30., metavar='S',
                   help='before each step, wait up to S seconds for the machine to be quiet (default 30)')
    p.add_argument('--out', metavar='PREFIX', help=f'write PREFIX.md and PREFIX.json (default: {DEFAULT_OUT} '
                                                    'for a run of the default configurations that all succeed)')
    args, defaults = p.parse_args(argv), p.parse_args([])
    if args.repeats < 1 or min(args.batches) < 1 or args.warmup < 0 or args.quiet_wait < 0:
        p.error('--repeats and --batches must be >= 1, --warmup and --quiet-wait >= 0')
    args.full_run = all(getattr(args, k) == getattr(defaults, k) for k in SCOPE)
    args.ms_kwargs = dict(args.ms_kwargs)
    return args


def main(argv=None):
    args = parse_args(argv)
    echo = lambda msg: print(msg, flush=True)  # noqa: E731
    started, load_before, rows, conversions = time.time(), os.getloadavg(), [], []
    try:   # the checkout's short hash, +dirty with uncommitted changes
        revision = subprocess.run(['git', '-C', ROOT, 'describe', '--always', '--dirty=+dirty', '--exclude=*'],
                                  capture_output=True, text=True).stdout.strip() or None
    except OSError:   # no git
        revision = None
    with tempfile.TemporaryDirectory(prefix='bench-') as workdir:
        for task, model, batch in itertools.product([t for t in args.tasks if t != 'convert'], args.models,
                                                     args.batches):
            echo(f'{task} {model} batch {batch}:')
            variants = [v for v in args.variants if task == 'infer' or args.train_pynative or v != 'ms-pynative']
            rows += run_group([dict(label=v, variant=v, framework=VARIANTS[v][0], mode=VARIANTS[v][1], task=task,
                                    model=model, batch=batch, revision=revision, warmup=args.warmup,
                                    model_kwargs=args.ms_kwargs if v != 'torch' else {}) for v in variants],
                              args, workdir, echo)
        for model in args.models if 'convert' in args.tasks else []:
            echo(f'convert {model}:')
            try:
                conversions += run_conversion(model, args.repeats, workdir, ROOT, echo)
            except RuntimeError as e:
                conversions.append(dict(model=model, error=str(e)))
                echo(f'  FAILED: {e}')
    run = dict(command=' '.join(['python -m bench'] + (sys.argv[1:] if argv is None else list(argv))),
               date=datetime.datetime.fromtimestamp(started).isoformat(timespec='seconds'),
               duration_s=round(time.time() - started, 1), load_average_before=[round(v, 2) for v in load_before],
               load_average_after=[round(v, 2) for v in os.getloadavg()], repeats=args.repeats,
               warmup=args.warmup, quiet_wait_s=args.quiet_wait, ms_kwargs=args.ms_kwargs,
               machine=machine_facts(revision))
    results = dict(run=run, goals=goals(rows), rows=rows, **({'conversion': conversions} if conversions else {}))
    table = markdown(results)
    echo('\n' + table)
    failed = any('error' in row for row in rows + conversions)
    out = args.out or (DEFAULT_OUT if args.full_run and not failed else None)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        for ext, text in (('.json', json.dumps(results, indent=1) + '\n'), ('.md', table)):
            with atomic_output(out + ext) as tmp, open(tmp, 'w') as f:
                f.write(text)
        echo(f'wrote {out}.md and {out}.json')
    elif args.full_run:
        echo(f'not written to {DEFAULT_OUT}.*: a configuration failed')
    sys.exit(1 if failed else 0)
