"""Where a step's time goes, per operator type: MindSpore (its profiler) next to torch_ref.

``python -m bench.profile --task infer`` profiles one step of each configuration (default: TNT-S,
batch 8, MindSpore graph and torch_ref eager; ``python -m bench``'s options choose others), each in
a fresh ``bench.worker`` after warm-up, and prints a table per configuration: operator type, calls
and total time, largest first. MindSpore reports kernel time per op; torch self CPU time per aten op.
"""
import csv
import glob
import os
import sys
import tempfile

from bench.report import md_table
from bench.run import Worker, arg_parser, groups, parse


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
    ranked = sorted(rows, key=lambda r: -r[2])
    rows, rest, total = ranked[:top], ranked[top:], sum(r[2] for r in ranked)
    rows += [(f'({len(rest)} more)', sum(r[1] for r in rest), sum(r[2] for r in rest))] if rest else []
    lines = [f'| {op} | {calls} | {ms:.1f} | {ms / total:.1%} |' for op, calls, ms in rows]
    header = ('op', 'calls', 'ms', 'share')
    return '\n'.join([f'### {title}: {total:.0f} ms of operator time'] + md_table(header, lines))


def main(argv=None):
    p = arg_parser('python -m bench.profile', __doc__.split('\n\n')[0])
    p.set_defaults(models=['tnt_s_patch16_224'], batches=[8], tasks=['infer'], variants=['ms-graph', 'torch'])
    p.add_argument('--top', type=int, default=15, help='rows per table (default 15)')
    args = parse(p, argv)
    if args.top < 1:
        p.error('--top must be >= 1')
    if not set(args.tasks) <= {'infer', 'train'}:
        p.error('--tasks: infer and/or train (conversion is not profiled)')
    with tempfile.TemporaryDirectory(prefix='bench-prof-') as workdir:
        for _, rows in groups(args):
            for row in rows:
                worker = Worker(row, workdir, print)
                reply = 'error' not in row and worker.ask('profile')
                if not reply:
                    sys.exit(f"bench.profile: {row['label']} failed: {row['error']}")
                worker.ask('quit')
                print(table(f"{row['framework']} {row['mode']}, {row['task']}, {row['model']}, batch {row['batch']}",
                            reply['ops'], args.top) + '\n', flush=True)


if __name__ == '__main__':
    main()
