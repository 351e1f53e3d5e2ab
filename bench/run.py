"""Run the benchmarks side by side and write the Markdown table and the JSON results.

Each configuration runs in a fresh ``bench.worker``; every MindSpore step alternates with a torch_ref
step (docs/performance.md, "What is measured, and how").
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

from bench.report import goals, markdown
from bench.worker import PREFIX
from tnt_common.cli import parser
from tnt_common.files import atomic_output, unwritable
from tnt_common.variants import family, list_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {'ms-graph': ('mindspore', 'graph'), 'ms-pynative': ('mindspore', 'pynative'), 'torch': ('torch', 'eager')}
DEFAULT_OUT = os.path.join(ROOT, 'bench', 'results', 'latest')
SCOPE = ('models', 'batches', 'tasks', 'variants', 'train_pynative', 'ms_kwargs')   # of a full run
ISA = ('sse', 'ssse', 'avx', 'fma', 'f16c', 'amx', 'asimd', 'sve', 'bf16', 'i8mm')   # vector extensions


def machine_facts(revision):
    """The machine and software, without importing the frameworks; ``cpu_id``: family, model and stepping (hosts
    of one model name differ), ``isa``: the CPU's vector extensions."""
    info = {}
    for path in ('/proc/cpuinfo', '/proc/meminfo'):
        try:
            with open(path) as f:
                for key, _, value in (ln.partition(':') for ln in f):
                    info.setdefault(key.strip(), value.strip())
        except OSError:   # not Linux
            pass
    versions = {p: next((d.version for d in metadata.distributions(name=p)), None)
                for p in ('mindspore', 'torch', 'numpy')}
    return dict(cpu=info.get('model name') or platform.processor() or platform.machine(),
                cpu_id=' '.join(f'{k} {info[k]}' for k in ('cpu family', 'model', 'stepping') if k in info) or None,
                logical_cores=os.cpu_count(),
                usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
                memory_gib='MemTotal' in info and round(int(info['MemTotal'].split()[0]) / 2 ** 20, 1) or None,
                os=platform.platform(), python=platform.python_version(), **versions, revision=revision,
                isa=sorted(f for f in (info.get('flags') or info.get('Features') or '').split() if f.startswith(ISA)))


class Worker:
    """A ``bench.worker`` process for ``row``; ``ready``: its first reply, also merged into the row.

    A worker that fails (here or in ``ask``) sets ``row['error']``."""

    def __init__(self, row, workdir, echo, quiet_wait_s=0.):
        self.row, self.echo, self.log = row, echo, tempfile.TemporaryFile('w+', dir=workdir)
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'bench.worker', json.dumps(row), str(quiet_wait_s)], cwd=workdir, text=True,
            env=dict(os.environ, PYTHONPATH=ROOT, GLOG_v='3'), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log)
        self.ready = self.ask()
        if self.ready:
            self.ready.pop('ready')
            row.update(self.ready, times_s=[], others_cpu=[])

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
            self.log.seek(0)
            errors = [ln.strip() for ln in self.log if 'Error' in ln]
            self.row['error'] = f'exit code {self.proc.wait()}' + (f': {errors[-1]}' if errors else '')
            self.echo(f"  {self.row['label']:<12} FAILED: {self.row['error']}")
        if reply is None or command == 'quit':
            self.proc.kill()
            self.proc.wait()
            self.log.close()
        return reply

    def rounds(self, repeats, ref=None):
        """``repeats`` steps of this worker, alternating with steps of ``ref`` (a Worker) and who goes first."""
        pairs = [self] + ([ref] if ref and 'error' not in ref.row else [])
        for r in range(repeats):
            for w in (pairs if r % 2 == 0 else pairs[::-1]):
                reply = 'error' not in w.row and w.ask('step')
                if reply:
                    w.row['times_s'].append(reply['seconds'])
                    w.row['others_cpu'].append(reply['others_cpu'])

    def stop(self):
        """Peak RSS and step statistics into the row; the worker ends."""
        row, reply = self.row, 'error' not in self.row and self.ask('quit')
        if not reply:
            return
        times, others = row['times_s'], [s for s in row['others_cpu'] if s is not None]
        row.update(reply, step_s_min=min(times), step_s_median=statistics.median(times),
                   others_cpu_mean=statistics.mean(others) if others else None)
        row.update(img_s_best=row['batch'] / row['step_s_min'], img_s_median=row['batch'] / row['step_s_median'])
        if row.get('torch_times_s'):
            row.update(vs_torch_median=statistics.median(row['torch_times_s']) / row['step_s_median'],
                       vs_torch_best=min(row['torch_times_s']) / row['step_s_min'])
        self.echo(f"  {row['label']:<12} {row['img_s_best']:8.2f} img/s best ({row['img_s_median']:.2f} median)  "
                  f"peak RSS {row['peak_rss_mib']:.0f} MiB" + (f"  compile {row['compile_s']:.1f} s"
                                                               if row['compile_s'] else ''))


def run_group(specs, args, workdir, echo):
    """The rows of one group, every one timed, the MindSpore ones in rounds with torch_ref steps."""
    rows = [dict(spec, load_average_1min=round(os.getloadavg()[0], 2)) for spec in specs]
    ref = next((Worker(r, workdir, echo, args.quiet_wait) for r in rows if r['framework'] == 'torch'), None)
    for row in (r for r in rows if r['framework'] != 'torch'):
        worker, first = Worker(row, workdir, echo, args.quiet_wait), ref and len(ref.row.get('times_s', []))
        worker.rounds(args.repeats, ref)
        if ref and 'error' not in ref.row:
            row['torch_times_s'] = ref.row['times_s'][first:]
        worker.stop()
    if ref:
        if 'error' not in ref.row and not ref.row['times_s']:
            ref.rounds(args.repeats)
        ref.stop()
    return rows


def measure(kind, src, dst, workdir, echo):
    """One conversion measurement (``bench.worker.conversion``) in a fresh process, and that process's whole time."""
    start, row = time.perf_counter(), dict(label=kind, task='convert', kind=kind, src=src, dst=dst)
    worker = Worker(row, workdir, echo)
    if worker.ready:
        worker.proc.communicate()   # its exit included, as for any command
        worker.log.close()
    if not worker.ready or worker.proc.returncode:
        error = row.get('error') or f'exit code {worker.proc.returncode}'
        raise RuntimeError(f'{kind} {os.path.basename(src)}: {error}')
    return dict(worker.ready, process_s=time.perf_counter() - start)


def run_conversion(model, repeats, workdir, echo):
    """Rows of one model: per direction, the floor, the conversion (fastest of ``repeats``) and the verified one."""
    pth, ckpt, back, copy = (os.path.join(workdir, n) for n in ('src.pth', 'out.ckpt', 'back.pth', 'copy'))
    measure('source', model, pth, workdir, echo)
    rows = []
    for direction, src, dst in (('torch -> MindSpore', pth, ckpt), ('MindSpore -> torch', ckpt, back)):
        best = {kind: min((measure(kind, src, d, workdir, echo) for _ in range(repeats)), key=lambda r: r['seconds'])
                for kind, d in (('floor', copy), ('convert', dst))}
        rows.append(dict(model=model, direction=direction, source_mib=os.path.getsize(src) / 2 ** 20,
                         **best, verify=measure('verify', src, dst, workdir, echo)))
        echo(f"  {direction}: {best['convert']['seconds'] - best['convert']['import_s']:.2f} s "
             f"(floor {best['floor']['seconds']:.2f} s), peak RSS {best['convert']['peak_rss_mib']:.0f} MiB")
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


def arg_parser(prog, doc):
    """The options every bench command takes: which configurations, and how each is run."""
    p = parser(prog, doc)
    p.add_argument('--models', type=csv_list(str, list_models(None)), help='comma-separated model names',
                   default=['tnt_s_patch16_224', 'tnt_b_patch16_224'])
    p.add_argument('--batches', type=csv_list(int), default=[1, 8], help='comma-separated batch sizes')
    p.add_argument('--tasks', type=csv_list(str, ('infer', 'train', 'convert')), default=['infer', 'train'],
                   help='comma-separated: infer, train, convert (checkpoint conversion)')
    p.add_argument('--variants', type=csv_list(str, list(VARIANTS)), default=list(VARIANTS),
                   help=f'comma-separated: {", ".join(VARIANTS)}')
    p.add_argument('--repeats', type=int, default=5, help='timed steps (conversion runs) per configuration (5)')
    p.add_argument('--warmup', type=int, default=2, help='untimed calls after the first (default 2)')
    p.add_argument('--no-train-pynative', dest='train_pynative', action='store_false',
                   help='skip MindSpore PyNative training steps (the slowest rows)')
    p.add_argument('--ms-arg', dest='ms_kwargs', type=key_value, action='append', default=[], metavar='KEY=VALUE',
                   help='extra mindspore_tnt.create_model argument, e.g. impl=standard')
    p.add_argument('--quiet-wait', type=float, default=30., metavar='S',
                   help='before each step, wait up to S seconds for the machine to be quiet (default 30)')
    return p


def parse(p, argv=None):
    args, defaults = p.parse_args(argv), p.parse_args([])
    if args.repeats < 1 or min(args.batches) < 1 or args.warmup < 0 or args.quiet_wait < 0:
        p.error('--repeats and --batches must be >= 1, --warmup and --quiet-wait >= 0')
    args.full_run = all(getattr(args, k) == getattr(defaults, k) for k in SCOPE)
    args.ms_kwargs = dict(args.ms_kwargs)
    if args.ms_kwargs:   # refused here, not in every worker; the frameworks are imported only for this
        import inspect
        from mindspore_tnt import PyramidTNT, TNT
        for model in args.models:
            taken = inspect.signature(PyramidTNT if family(model) == 'ptnt' else TNT).parameters
            if unknown := sorted(set(args.ms_kwargs) - set(taken)):
                p.error(f'--ms-arg {", ".join(unknown)}: not an argument of {model}')
    return args


def groups(args, revision=None):
    """The row groups of ``args``: (task, model, batch) and the spec of each of its rows."""
    for task, model, batch in itertools.product([t for t in args.tasks if t != 'convert'], args.models, args.batches):
        yield (task, model, batch), [
            dict(label=v, variant=v, framework=VARIANTS[v][0], mode=VARIANTS[v][1], task=task, model=model, batch=batch,
                 revision=revision, warmup=args.warmup, model_kwargs=args.ms_kwargs if v != 'torch' else {})
            for v in args.variants if task == 'infer' or args.train_pynative or v != 'ms-pynative']


def main(argv=None):
    p = arg_parser('python -m bench', __doc__.split('\n\n')[0])
    p.add_argument('--out', metavar='PREFIX', help=f'write PREFIX.md and PREFIX.json (default: {DEFAULT_OUT} '
                                                    'for a run of the default configurations that all succeed)')
    args = parse(p, argv)
    if args.out and (problem := unwritable(os.path.dirname(os.path.abspath(args.out)))):   # before the run
        p.error(f'--out {args.out}: {problem}')
    echo = lambda msg: print(msg, flush=True)  # noqa: E731
    started, load_before, rows, conversions = time.time(), os.getloadavg(), [], []
    try:   # the checkout's short hash, +dirty with uncommitted changes
        revision = subprocess.run(['git', '-C', ROOT, 'describe', '--always', '--dirty=+dirty', '--exclude=*'],
                                  capture_output=True, text=True).stdout.strip() or None
    except OSError:   # no git
        revision = None
    with tempfile.TemporaryDirectory(prefix='bench-') as workdir:
        for (task, model, batch), specs in groups(args, revision):
            echo(f'{task} {model} batch {batch}:')
            rows += run_group(specs, args, workdir, echo)
        for model in args.models if 'convert' in args.tasks else []:
            echo(f'convert {model}:')
            try:
                conversions += run_conversion(model, args.repeats, workdir, echo)
            except RuntimeError as e:
                conversions.append(dict(model=model, error=str(e)))
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
