"""One benchmark configuration in its own process, driven over stdin/stdout by ``bench.run``.

``python -m bench.worker SPEC_JSON`` builds the step of ``SPEC_JSON`` (see ``bench.steps``),
times the graph compilation (GRAPH mode) and the first call, runs ``warmup`` more calls,
then answers ``step`` with the wall time of one more call and ``quit`` with the process's
peak RSS.
Replies are single lines prefixed with ``PREFIX``; anything else on stdout is framework noise.
"""
import json
import resource
import sys
import time

PREFIX = '@bench '


def reply(**payload):
    sys.stdout.write(PREFIX + json.dumps(payload) + '\n')
    sys.stdout.flush()


def peak_rss_mib():
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def framework_facts(spec):
    if spec['framework'] == 'torch':
        import torch
        return {'torch_threads': torch.get_num_threads()}
    return {}


def main():
    spec = json.loads(sys.argv[1])
    if spec['framework'] == 'torch':
        import torch  # noqa: F401  (imported before the baseline so it counts as import cost)
    else:
        import mindspore  # noqa: F401
    from bench.steps import build
    rss_import = peak_rss_mib()
    compile_graph, step = build(spec)
    compile_s = timed(compile_graph) if compile_graph is not None else None
    first = timed(step)
    for _ in range(spec['warmup']):
        step()
    reply(ready=True, compile_s=compile_s, first_call_s=first, rss_import_mib=rss_import,
          **framework_facts(spec))
    for line in sys.stdin:
        command = line.strip()
        if command == 'step':
            reply(seconds=timed(step))
        elif command == 'quit':
            reply(peak_rss_mib=peak_rss_mib())
            return
        else:
            reply(error=f'unknown command {command!r}')
            return


if __name__ == '__main__':
    main()
