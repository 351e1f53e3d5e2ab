"""One benchmark configuration in its own process, driven over stdin/stdout by ``bench.run``.

``python -m bench.worker SPEC_JSON QUIET_WAIT_S`` builds the step of ``SPEC_JSON``
(``bench.steps``), times the graph compilation (GRAPH mode) and the first call, runs
``warmup`` more calls, then answers ``step`` with the wall time of one more call (started
once the machine is quiet, waiting at most QUIET_WAIT_S) and the CPU share other processes
took meanwhile, ``profile`` with the operator times of one call (``bench.profile``) and
``quit`` with its peak RSS (``ru_maxrss``). Replies are single lines prefixed with
``PREFIX``; anything else on stdout is framework noise.
"""
import importlib
import json
import os
import resource
import sys
import time

PREFIX = '@bench '
QUIET_SHARE = 0.15   # other processes use less than this share of all cores: quiet


def reply(**payload):
    print(PREFIX + json.dumps(payload), flush=True)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def machine_cpu_s():
    """(busy, total) CPU seconds of all cores since boot, from /proc/stat (None elsewhere)."""
    try:
        with open('/proc/stat') as f:
            v = [int(x) / os.sysconf('SC_CLK_TCK') for x in f.readline().split()[1:9]]  # guest is in user
    except OSError:
        return None
    return sum(v) - v[3] - v[4], sum(v)


def timed(fn):
    """(wall seconds of ``fn()``, share (0..1) of all cores' time other processes used meanwhile, or None)."""
    machine, own, start = machine_cpu_s(), time.process_time(), time.perf_counter()
    fn()
    seconds, own = time.perf_counter() - start, time.process_time() - own
    if machine is None:
        return seconds, None
    busy, total = (b - a for a, b in zip(machine, machine_cpu_s()))
    return seconds, max(0., (busy - own) / total) if total > 0 else 0.


def main():
    spec, quiet_wait_s = json.loads(sys.argv[1]), float(sys.argv[2])
    framework = importlib.import_module(spec['framework'])  # before the baseline: counts as import cost
    facts = {'torch_threads': framework.get_num_threads()} if spec['framework'] == 'torch' else {}
    from bench.steps import build
    rss_import = peak_rss_mib()
    compile_graph, step = build(spec)
    compile_s = timed(compile_graph)[0] if compile_graph is not None else None
    first = timed(step)[0]
    for _ in range(spec['warmup']):
        step()
    reply(ready=True, compile_s=compile_s, first_call_s=first, rss_import_mib=rss_import, **facts)
    for line in sys.stdin:  # 'step' or 'profile' lines, then 'quit'
        if line.strip() == 'step':
            deadline = time.monotonic() + quiet_wait_s
            while time.monotonic() < deadline and (timed(lambda: time.sleep(0.5))[1] or 0.) >= QUIET_SHARE:
                pass
            seconds, others = timed(step)
            reply(seconds=seconds, others_cpu=others)
        elif line.strip() == 'profile':
            from bench.profile import operator_times
            reply(ops=operator_times(spec['framework'], step))
        else:
            break
    reply(peak_rss_mib=peak_rss_mib())


if __name__ == '__main__':
    main()
