"""How busy the rest of the machine is, from /proc (Linux): to wait for quiet and to label steps.

``CpuMeter(pid)`` measures, between ``start()`` and ``stop()``, the share of the machine's
CPU time used by everything except process ``pid``. Elsewhere than Linux it reports None.
"""
import time

QUIET_SHARE = 0.15      # the rest of the machine uses less than this share of all cores: quiet
SAMPLE_S = 0.5


def _machine_ticks():
    """(busy, total) CPU ticks of the whole machine since boot."""
    with open('/proc/stat') as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])       # guest time is already counted in user
    return total - idle, total


def _process_ticks(pid):
    """CPU ticks (user + system, all threads) of process ``pid``; 0 once it is gone."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return 0


class CpuMeter:
    def __init__(self, pid=None):
        self.pid = pid

    def start(self):
        try:
            self._machine = _machine_ticks()
        except OSError:
            self._machine = None
        self._own = _process_ticks(self.pid) if self.pid else 0
        return self

    def stop(self):
        """Share (0..1) of all cores' time used by other processes since ``start()``, or None."""
        if self._machine is None:
            return None
        busy, total = _machine_ticks()
        own = (_process_ticks(self.pid) if self.pid else 0) - self._own
        elapsed = total - self._machine[1]
        return max(0., (busy - self._machine[0] - own) / elapsed) if elapsed > 0 else 0.


def wait_for_quiet(max_wait_s, share=QUIET_SHARE):
    """Wait until the machine's CPU use stays below ``share`` for ``SAMPLE_S`` (at most ``max_wait_s``).

    Returns the share of the last sample (None where it cannot be measured)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        meter = CpuMeter().start()
        time.sleep(SAMPLE_S)
        used = meter.stop()
        if used is None or used < share or time.monotonic() >= deadline:
            return used
