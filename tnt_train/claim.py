"""A run folder held by the training job that writes into it, so that two runs never share one.

A new run takes its folder by creating ``.claimed-by`` in it (``O_EXCL``: of two runs started at
once, one gets it); the file names the job, a process of it and the host. The processes of one
msrun job (its ranks, on every node, and its scheduler, which runs the script too) share the
job's name, so they take the same folder. The process that made the file removes it when it
exits; a file left by a killed job holds nothing if that job ran on this host (its process is
gone), and holds the folder if it ran on another (remove the file by hand).
"""
import atexit
import contextlib
import os
import socket

from tnt_train.device import launched_by_msrun

NAME = '.claimed-by'


def job():
    """This training job: msrun's scheduler address, shared by its processes, or this process."""
    if launched_by_msrun():
        return f"msrun job {os.environ.get('MS_SCHED_HOST')}:{os.environ.get('MS_SCHED_PORT')}"
    return f'process {os.getpid()} on {socket.gethostname()}'


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process
        return True
    return True


def _read(folder):
    """(job, pid, host) of the claim on ``folder``, or None."""
    try:
        with open(os.path.join(folder, NAME)) as f:
            name, pid, host = f.read().split('\n')[:3]
    except (FileNotFoundError, ValueError):
        return None
    return name, pid, host


def holder(folder):
    """The running job that holds ``folder``, as its claim names it (with its host if not this one),
    or None. A claim made on another host (a shared file system) is taken as held: whether its
    process still runs cannot be told from here."""
    claimed = _read(folder)
    if claimed is None:
        return None
    name, pid, host = claimed
    if host != socket.gethostname():
        return name if name.endswith(f' on {host}') else f'{name} on {host}'
    return name if pid.isdigit() and _alive(int(pid)) else None


def claim(folder):
    """Whether this job holds ``folder`` now (made if missing): False if another running job does."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, NAME)
    mine = f'{job()}\n{os.getpid()}\n{socket.gethostname()}\n'
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if (_read(folder) or ('',))[0] == job():      # this job's, made by another of its processes
                return True
            if holder(folder) is not None:
                return False
            with contextlib.suppress(FileNotFoundError):   # a killed job's
                os.remove(path)
            continue
        with os.fdopen(fd, 'w') as f:
            f.write(mine)
        atexit.register(release, folder)
        return True
    return False


def release(folder):
    """Removes this process's claim on ``folder``, if it made one."""
    path = os.path.join(folder, NAME)
    with contextlib.suppress(OSError, IndexError):
        with open(path) as f:
            if f.read().split('\n')[1] == str(os.getpid()):
                os.remove(path)
