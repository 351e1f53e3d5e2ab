"""Where a step's time goes, per operator type: MindSpore (its profiler) next to torch_ref.

``python -m bench.profile --model tnt_s_patch16_224 --batch 8 --task infer`` profiles one
step of MindSpore graph mode and one of torch_ref eager, each in a fresh process after
warm-up, and prints both tables: operator type, calls and total time, largest first.
MindSpore reports kernel time per op; torch reports self CPU time per aten op.
"""
import argparse
import csv
import glob
import json
import os
import subprocess
import sys
import tempfile

from bench.steps import build
from tnt_common.variants import list_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARMUP = 2
FRAMEWORKS = {'mindspore': 'graph', 'torch': 'eager'}


def mindspore_ops(run):
    """[(op type, calls, ms)] of one ``run()`` under MindSpore's CPU profiler."""
    import mindspore as ms
    from mindspore.profiler import ProfilerActivity
    with tempfile.TemporaryDirectory(prefix='bench-prof-') as out:
        with ms.profiler.profile(activities=[ProfilerActivity.CPU],
                                 on_trace_ready=ms.profiler.tensorboard_trace_handler(out)) as prof:
            run()
            prof.step()
        found = glob.glob(os.path.join(out, '*', 'FRAMEWORK', 'cpu_op_type_info_*.csv'))
        if not found:
            raise RuntimeError('MindSpore wrote no operator table')
        with open(found[0]) as f:
            return [(r['op_type'], int(r['type_occurrences']), float(r['total_compute_time']))
                    for r in csv.DictReader(f)]


def torch_ops(run):
    """[(aten op, calls, ms of self CPU time)] of one ``run()`` under torch.profiler."""
    import torch
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    return [(e.key, e.count, e.self_cpu_time_total / 1e3) for e in prof.key_averages() if e.self_cpu_time_total > 0]


def profile_one(spec):
    compile_graph, run = build(spec)
    if compile_graph is not None:
        compile_graph()
    for _ in range(WARMUP):
        run()
    return (mindspore_ops if spec['framework'] == 'mindspore' else torch_ops)(run)


def table(title, rows, top):
    rows = sorted(rows, key=lambda r: -r[2])
    total = sum(r[2] for r in rows)
    lines = [f'### {title}: {total:.0f} ms of operator time', '', '| op | calls | ms | share |', '|---|---|---|---|']
    lines += [f'| {op} | {calls} | {ms:.1f} | {ms / total:.1%} |' for op, calls, ms in rows[:top]]
    rest = rows[top:]
    if rest:
        lines.append(f'| ({len(rest)} more) | {sum(r[1] for r in rest)} | {sum(r[2] for r in rest):.1f} '
                     f'| {sum(r[2] for r in rest) / total:.1%} |')
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m bench.profile', description=__doc__.split('\n\n')[0])
    p.add_argument('--model', choices=list_models(), default='tnt_s_patch16_224')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--task', choices=('infer', 'train'), default='infer')
    p.add_argument('--frameworks', default='mindspore,torch', help='comma-separated: mindspore, torch')
    p.add_argument('--ms-impl', choices=('cpu', 'standard'), help="mindspore_tnt's impl (default: by device)")
    p.add_argument('--top', type=int, default=15, help='rows per table (default 15)')
    p.add_argument('--spec', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.spec:  # the child process: profile one framework, print its rows as JSON
        print(json.dumps(profile_one(json.loads(args.spec))))
        return
    frameworks = [f for f in args.frameworks.split(',') if f]
    if not frameworks or set(frameworks) - set(FRAMEWORKS):
        p.error(f'--frameworks: choose from {", ".join(FRAMEWORKS)}')
    for framework in frameworks:
        spec = dict(framework=framework, mode=FRAMEWORKS[framework], task=args.task, model=args.model,
                    batch=args.batch, model_kwargs={'impl': args.ms_impl} if args.ms_impl and
                    framework == 'mindspore' else {})
        with tempfile.TemporaryDirectory(prefix='bench-prof-') as cwd:
            done = subprocess.run([sys.executable, '-m', 'bench.profile', '--spec', json.dumps(spec)], cwd=cwd,
                                  capture_output=True, text=True, env=dict(os.environ, GLOG_v='3', PYTHONPATH=ROOT))
        if done.returncode:
            sys.exit(f'bench.profile: {framework} failed:\n{done.stderr[-2000:]}')
        rows = json.loads(done.stdout.strip().splitlines()[-1])
        title = f"{framework} {FRAMEWORKS[framework]}, {args.task}, {args.model}, batch {args.batch}"
        print(table(title, rows, args.top) + '\n', flush=True)


if __name__ == '__main__':
    main()
