"""``tnt-convert`` as a user runs it: a subprocess of ``python -m convert.cli`` from the repo root."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, check=True):
    """The completed process; with ``check``, exit status 0 is asserted."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    p = subprocess.run([sys.executable, '-m', 'convert.cli', '--no-progress', *map(str, args)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p
