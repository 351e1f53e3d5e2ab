"""Timing one row group: the torch_ref worker paired, step by step, with each MindSpore worker.

In a row group (same task, model and batch) the torch_ref worker stays up while the
MindSpore workers run one after another; each MindSpore configuration is timed in rounds
alternating with torch_ref steps, and its ratio to torch_ref uses the torch_ref steps of
those same rounds. Before every step the machine must be quiet (``bench.load``; at most
``quiet_wait_s``), and the CPU share other processes took during the step is recorded with
it. Only two workers hold memory at a time.
"""
import os
import statistics

from bench.load import CpuMeter, wait_for_quiet
from bench.process import Worker, WorkerError


class GroupTimer:
    def __init__(self, repeats, workdir, min_free_gib, quiet_wait_s, echo):
        self.repeats, self.workdir, self.min_free_gib = repeats, workdir, min_free_gib
        self.quiet_wait_s, self.echo = quiet_wait_s, echo

    def start(self, row):
        """A ready worker for ``row`` (its set-up facts merged into the row), or None if it failed."""
        worker = Worker(row, row.pop('source'), self.workdir, self.min_free_gib)
        try:
            row.update({k: v for k, v in worker.read().items() if k != 'ready'})
            row.update(times_s=[], others_cpu=[])
            return worker
        except WorkerError as e:
            self.fail(row, worker, e)
            return None

    def fail(self, row, worker, error):
        row['error'] = str(error)
        worker.close()
        self.echo(f"  {row['label']:<26} FAILED: {error}")

    def step(self, row, worker):
        wait_for_quiet(self.quiet_wait_s)
        meter = CpuMeter(worker.proc.pid).start()
        try:
            seconds = worker.ask('step')['seconds']
        except WorkerError as e:
            self.fail(row, worker, e)
            return
        row['times_s'].append(seconds)
        row['others_cpu'].append(meter.stop())

    def rounds(self, pairs):
        """``repeats`` rounds of one step per (row, worker), alternating who goes first; the pairs left."""
        for r in range(self.repeats):
            for row, worker in (pairs if r % 2 == 0 else pairs[::-1]):
                if 'error' not in row:
                    self.step(row, worker)
        return [(row, worker) for row, worker in pairs if 'error' not in row]

    def stop(self, row, worker):
        try:
            row.update(worker.ask('quit'))
        except WorkerError as e:
            self.fail(row, worker, e)
            return
        worker.close()
        times, others = row['times_s'], [s for s in row['others_cpu'] if s is not None]
        row.update(step_s_min=min(times), step_s_median=statistics.median(times),
                   others_cpu_mean=statistics.mean(others) if others else None)
        row.update(img_s_best=row['batch'] / row['step_s_min'], img_s_median=row['batch'] / row['step_s_median'])
        self.echo(f"  {row['label']:<26} {row['img_s_best']:8.2f} img/s best ({row['img_s_median']:.2f} median)"
                  f"  peak RSS {row['peak_rss_mib']:.0f} MiB"
                  + (f"  compile {row['compile_s']:.1f} s" if row.get('compile_s') is not None else ''))

    def run_group(self, specs):
        """Rows of one group: every spec timed, MindSpore ones paired with torch_ref steps."""
        load = round(os.getloadavg()[0], 2)
        rows = [dict(spec, load_average_1min=load) for spec in specs]
        ref = next((r for r in rows if r['framework'] == 'torch'), None)
        ref_worker = ref and self.start(ref)
        for row in rows:
            if row is ref:
                continue
            worker = self.start(row)
            if worker is None:
                continue
            first = len(ref['times_s']) if ref_worker and 'error' not in ref else None
            alive = self.rounds([(row, worker)] + ([(ref, ref_worker)] if first is not None else []))
            if first is not None and (ref, ref_worker) in alive:
                row['torch_times_s'] = ref['times_s'][first:]
            if (row, worker) in alive:
                self.stop(row, worker)
        if ref_worker and 'error' not in ref:
            if not ref['times_s']:
                self.rounds([(ref, ref_worker)])
            if 'error' not in ref:
                self.stop(ref, ref_worker)
        for row in rows:
            paired = row.get('torch_times_s')
            if 'img_s_median' in row and paired:
                row['vs_torch_median'] = statistics.median(paired) / row['step_s_median']
                row['vs_torch_best'] = min(paired) / row['step_s_min']
        return rows
