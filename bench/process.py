"""The parent's handle on one ``bench.worker`` process: start, ask, guard memory, stop."""
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from bench.worker import PREFIX

LOG_TAIL_LINES = 12


class WorkerError(RuntimeError):
    pass


def mem_available_gib():
    """MemAvailable of the machine (Linux), or None where /proc/meminfo does not exist."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return None


def _rss_gib(pid):
    try:
        with open(f'/proc/{pid}/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 30
    except OSError:
        return 0.


def _die_with_parent():
    """In the child: get SIGKILL when the benchmark process dies (Linux), so no worker outlives it."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Worker:
    """A worker for ``spec`` importing the models from ``source``.

    While workers live, a watchdog kills the largest of them when the machine's available
    memory falls below ``min_free_gib``: on a shared machine a benchmark must fail alone,
    not invite the kernel's OOM killer to pick someone else's process.
    """
    live = set()
    _watchdog = None

    def __init__(self, spec, source, workdir, min_free_gib):
        self.spec = spec
        self.killed_for_memory = None
        self.log = tempfile.NamedTemporaryFile('w+', prefix='bench-', suffix='.log', dir=workdir, delete=False)
        env = dict(os.environ, PYTHONPATH=source, GLOG_v='3')
        self.proc = subprocess.Popen([sys.executable, '-m', 'bench.worker', json.dumps(spec)], cwd=workdir,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, preexec_fn=_die_with_parent)
        Worker.live.add(self)
        if Worker._watchdog is None:
            Worker._watchdog = threading.Thread(target=Worker._guard_memory, args=(min_free_gib,), daemon=True)
            Worker._watchdog.start()

    @staticmethod
    def _guard_memory(min_free_gib):
        while True:
            free = mem_available_gib()
            running = [w for w in list(Worker.live) if w.proc.poll() is None]
            if free is not None and free < min_free_gib and running:
                victim = max(running, key=lambda w: _rss_gib(w.proc.pid))
                victim.killed_for_memory = free
                victim.proc.kill()
                time.sleep(1.)
            time.sleep(0.2)

    def _failure(self):
        code = self.proc.wait()
        if self.killed_for_memory is not None:
            return WorkerError(f'stopped: the machine had {self.killed_for_memory:.1f} GiB available, '
                               f'below the --min-free-gib reserve')
        self.log.seek(0)
        lines = [ln.rstrip() for ln in self.log.read().splitlines() if ln.strip()]
        sys.stderr.write(f"--- {self.spec['label']} (exit code {code}), last lines of its log:\n"
                         + '\n'.join(lines[-LOG_TAIL_LINES:]) + '\n---\n')
        errors = [ln for ln in lines if 'Error' in ln]
        return WorkerError(f'exit code {code}' + (f': {errors[-1].strip()}' if errors else ''))

    def read(self):
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                msg = json.loads(line[len(PREFIX):])
                if 'error' in msg:
                    raise WorkerError(msg['error'])
                return msg
        raise self._failure()

    def ask(self, command):
        try:
            self.proc.stdin.write(command + '\n')
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        return self.read()

    def close(self):
        Worker.live.discard(self)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)
