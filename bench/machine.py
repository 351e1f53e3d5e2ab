"""Facts about the machine and software a benchmark ran on, without importing the frameworks."""
import os
import platform
import subprocess
from importlib import metadata


def _cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib():
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemTotal:'):
                    return round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return None


def _version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_revision(root):
    """``<short hash>`` of the checkout at ``root``, with ``+dirty`` if it has uncommitted changes."""
    def git(*args):
        return subprocess.run(['git', '-C', root, *args], capture_output=True, text=True, check=True).stdout.strip()
    try:
        rev = git('rev-parse', '--short', 'HEAD')
        dirty = git('status', '--porcelain', '--untracked-files=no')
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ('+dirty' if dirty else '')


def machine_facts(root):
    return dict(
        cpu=_cpu_model(),
        logical_cores=os.cpu_count(),
        usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
        memory_gib=_memory_gib(),
        os=platform.platform(),
        python=platform.python_version(),
        mindspore=_version('mindspore'),
        torch=_version('torch'),
        numpy=_version('numpy'),
        revision=git_revision(root),
    )
