"""Killing training with SIGKILL mid-epoch and resuming reproduces the uninterrupted run exactly.

The runs use the recipe's random augmentations (RandAugment, erasing, Mixup/CutMix) and
drop path, so the data order, every augmentation and every drop-path mask must be
restored too.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from parity_tests.helpers import SCRIPT, env, rows, train, weights

ARGS = ['--epochs', 2, '--save-every', 5, '--rand-augment', 'rand-m9-mstd0.5-inc1', '--reprob', 0.25,
        '--mixup', 0.8, '--cutmix', 1.0, '--drop-path', 0.1]
KILL_AFTER = 'epoch0001_step00000030.ckpt'    # 8 steps into the second epoch of 22 steps
COMPARED = ('global_step', 'epoch', 'loss', 'lr', 'grad_norm', 'loss_scale', 'overflow')

# A resume that forgets the AdamW moments: the planted fault the comparison must catch.
FORGETFUL = '''
import runpy, sys
from mindspore import ops
import tnt_train.checkpoint as ckpt
restore = ckpt.restore
def forgetful(params, saved, path):
    restore(params, saved, path)
    for p in params:
        if p.name.startswith(('exp_avg.', 'exp_avg_sq.')):
            p.set_data(ops.zeros_like(p))
ckpt.restore = forgetful
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def step_rows(path):
    return [tuple(r[k] for k in COMPARED) for r in rows(path)]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp('resume')
    full, killed = base / 'full', base / 'killed'
    train(*ARGS, '--output', full)
    proc = subprocess.Popen([sys.executable, SCRIPT, '--device', 'CPU', *map(str, ARGS), '--output', str(killed)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (killed / 'checkpoints' / KILL_AFTER).exists():
        assert proc.poll() is None and time.time() < deadline, 'the run ended before the checkpoint appeared'
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    forgetful = base / 'forgetful'
    shutil.copytree(killed, forgetful)
    return full, killed, forgetful


def test_kill_leaves_only_whole_checkpoints(runs):
    from tnt_train.checkpoint import read
    _, killed, _ = runs
    files = [f for f in os.listdir(killed / 'checkpoints') if f.endswith('.ckpt')]
    assert KILL_AFTER in files
    for f in files:
        saved, meta, _ = read(str(killed / 'checkpoints' / f))   # CRC-checked
        assert meta['global_step'] > 0 and 'exp_avg.head.weight' in saved
    assert len(step_rows(killed / 'steps.csv')) < 44          # it really died mid-epoch


def test_resume_reproduces_the_uninterrupted_run(runs):
    full, killed, _ = runs
    proc = train(*ARGS, '--output', killed, '--resume', killed)
    resumed_at = int(proc.stdout.split('resumed at epoch 2 step ')[1].split()[0])
    assert 8 <= resumed_at < 22
    want, got = step_rows(full / 'steps.csv'), step_rows(killed / 'steps.csv')
    assert len(got) == len(want) == 44
    assert got == want          # loss, LR, gradient norm of every step, bit for bit
    assert rows(killed / 'metrics.csv') and [
        {k: r[k] for k in ('train_loss', 'val_loss', 'top1', 'top5')} for r in rows(killed / 'metrics.csv')] == [
        {k: r[k] for k in ('train_loss', 'val_loss', 'top1', 'top5')} for r in rows(full / 'metrics.csv')]
    a, b = weights(full / 'model.ckpt'), weights(killed / 'model.ckpt')
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_comparison_catches_a_resume_without_optimizer_moments(runs, tmp_path):
    from tnt_train.checkpoint import read, resolve_resume
    full, _, forgetful = runs
    resumed_at = read(resolve_resume(str(forgetful)))[1]['global_step']
    script = tmp_path / 'forgetful_resume.py'
    script.write_text(FORGETFUL)
    subprocess.run([sys.executable, str(script), SCRIPT, '--device', 'CPU', *map(str, ARGS), '--output',
                    str(forgetful), '--resume', str(forgetful)], env=env(), check=True, capture_output=True,
                   timeout=900)
    want, got = step_rows(full / 'steps.csv'), step_rows(forgetful / 'steps.csv')
    assert got[:resumed_at] == want[:resumed_at]
    assert got[resumed_at + 1:] != want[resumed_at + 1:]
