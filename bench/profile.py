"""Where a step's time goes, per operator type: MindSpore (its profiler) next to torch_ref.

``python -m bench.profile --model tnt_s_patch16_224 --batch 8 --task infer`` profiles one
step of MindSpore graph mode and one of torch_ref eager, each in a fresh ``bench.worker``
after warm-up, and prints both tables: operator type, calls and total time, largest first.
MindSpore reports kernel time per op; torch reports self CPU time per aten op.
"""
import csv
import glob
import os
import sys
import tempfile

from bench.run import Worker, csv_list
from tnt_common.cli import parser
from tnt_common.variants import list_models

FRAMEWORKS = {'mindspore': 'graph', 'torch': 'eager'}


def operator_times(framework, run):
    """[(op type, calls, ms)] of one ``run()`` under the framework's CPU profiler."""
    if framework == 'torch':
        import torch
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            run()
        return [(e.key, e.count, e.self_cpu_time_total / 1e3) for e in prof.key_averages() if e.self_cpu_time_total]
    import mindspore as ms
    with tempfile.TemporaryDirectory(prefix='bench-prof-') as out:
        with ms.profiler.profile(activities=[ms.profiler.ProfilerActivity.CPU],
                                 on_trace_ready=ms.profiler.tensorboard_trace_handler(out)) as prof:
            run()
            prof.step()
        found = glob.glob(os.path.join(out, '*', 'FRAMEWORK', 'cpu_op_type_info_*.csv'))
        if not found:
            raise RuntimeError('MindSpore wrote no operator table')
        with open(found[0]) as f:
            return [(r['op_type'], int(r['type_occurrences']), float(r['total_compute_time']))
                    for r in csv.DictReader(f)]


def table(title, rows, top):
    rows = sorted(rows, key=lambda r: -r[2])
    total = sum(r[2] for r in rows)
    lines = [f'### {title}: {total:.0f} ms of operator time', '', '| op | calls | ms | share |', '|---|---|---|---|']
    lines += [f'| {op} | {calls} | {ms:.1f} | {ms / total:.1%} |' for op, calls, ms in rows[:top]]
    if rows[top:]:
        rest = rows[top:]
        lines.append(f'| ({len(rest)} more) | {sum(r[1] for r in rest)} | {sum(r[2] for r in rest):.1f} '
                     f'| {sum(r[2] for r in rest) / total:.1%} |')
    return '\n'.join(lines)


def main(argv=None):
    p = parser('python -m bench.profile', __doc__.split('\n\n')[0])
    p.add_argument('--model', choices=list_models(None), default='tnt_s_patch16_224')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--task', choices=('infer', 'train'), default='infer')
    p.add_argument('--frameworks', type=csv_list(str, list(FRAMEWORKS)), default=list(FRAMEWORKS),
                   help='comma-separated: mindspore, torch')
    p.add_argument('--ms-impl', choices=('cpu', 'standard'), help="mindspore_tnt's impl (default: by device)")
    p.add_argument('--top', type=int, default=15, help='rows per table (default 15)')
    args = p.parse_args(argv)
    if args.batch < 1 or args.top < 1:
        p.error('--batch and --top must be >= 1')
    for framework in args.frameworks:
        title = f'{framework} {FRAMEWORKS[framework]}, {args.task}, {args.model}, batch {args.batch}'
        row = dict(label=framework, framework=framework, mode=FRAMEWORKS[framework], task=args.task, warmup=2,
                   model=args.model, batch=args.batch, model_kwargs={'impl': args.ms_impl}
                   if args.ms_impl and framework == 'mindspore' else {})
        with tempfile.TemporaryDirectory(prefix='bench-prof-') as workdir:
            worker = Worker(row, workdir, print)
            reply = 'error' not in row and worker.ask('profile')
            if not reply:
                sys.exit(f"bench.profile: {framework} failed: {row['error']}")
            worker.ask('quit')
        print(table(title, reply['ops'], args.top) + '\n', flush=True)


if __name__ == '__main__':
    main()
