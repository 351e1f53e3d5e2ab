"""SIGTERM (kill, timeout, a job scheduler) ends every command as Ctrl-C does: the output it was
writing is left as it was, and its temporary removed."""
import os
import signal
import subprocess
import sys

from parity_tests.helpers import ROOT, env

# A command writing an output, terminated halfway through the write.
WRITER = '''
import os, signal, sys
from tnt_common.cli import end_on_sigterm
from tnt_common.files import atomic_output
if sys.argv[1] == 'handled':
    end_on_sigterm()
with atomic_output('out.bin') as tmp:
    with open(tmp, 'w') as f:
        f.write('half of it')
    os.kill(os.getpid(), signal.SIGTERM)
'''


def terminated(tmp_path, how):
    (tmp_path / 'out.bin').write_text('the earlier output')
    proc = subprocess.run([sys.executable, '-c', WRITER, how], cwd=tmp_path, env=env(), capture_output=True,
                          text=True, timeout=120)
    return proc.returncode, sorted(os.listdir(tmp_path)), (tmp_path / 'out.bin').read_text()


def test_sigterm_leaves_no_temporary(tmp_path):
    assert terminated(tmp_path, 'handled') == (128 + signal.SIGTERM, ['out.bin'], 'the earlier output')


def test_without_the_handler_the_temporary_stays(tmp_path):
    """What the check above catches: Python's default SIGTERM skips the ``finally`` blocks."""
    code, files, text = terminated(tmp_path, 'default')
    assert code == -signal.SIGTERM and len(files) == 2 and text == 'the earlier output'


def test_every_command_ends_on_sigterm():
    import ast
    for path in ('train_ascend.py', 'convert/cli.py', 'parity/cli.py', 'tnt_tools/common.py'):
        calls = [n.func.id for n in ast.walk(ast.parse(open(os.path.join(ROOT, path)).read()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        assert 'end_on_sigterm' in calls, path
