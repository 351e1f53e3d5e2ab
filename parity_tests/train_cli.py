"""Helpers for the training tests: run train_ascend.py in a subprocess, read what it wrote."""
import csv
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'train_ascend.py')


def env():
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    e['PATH'] = os.path.dirname(sys.executable) + os.pathsep + e.get('PATH', '')   # msrun's workers
    return e


def train(*args, timeout=900, check=True):
    """Run ``train_ascend.py args`` on CPU; the completed process (stdout, stderr as text)."""
    proc = subprocess.run([sys.executable, SCRIPT, '--device', 'CPU', *map(str, args)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'train_ascend.py {" ".join(map(str, args))} exited {proc.returncode}:\n'
                             f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc


def rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def weights(path):
    """``{name: array}`` of a MindSpore checkpoint file."""
    import mindspore as ms
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items() if hasattr(v, "asnumpy")}


def max_rel_diff(a, b):
    """Largest per-tensor ``max|a - b| / max|b|`` over the tensors of ``b``."""
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(a[k] - b[k])) / max(float(np.max(np.abs(b[k]))), 1e-12)) for k in b)
