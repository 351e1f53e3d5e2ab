"""Killing training with SIGKILL mid-epoch and resuming reproduces the uninterrupted run exactly.

The runs use the recipe's random augmentations (RandAugment, erasing, Mixup/CutMix) and
drop path, so the data order, every augmentation and every drop-path mask must be
restored too. Every run is queued at the start of the session; the resumes work on copies
of the killed run's folder, which stays as the kill left it.
"""
import os
import shutil
import signal
import sys

import numpy as np
import pytest

from parity_tests.helpers import SCRIPT, Command, rows, started, train_command, weights

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


def resume(killed, folder, *command):
    """``command ARGS --resume folder`` on a copy ``folder`` of the killed run, made when it starts."""
    def argv():
        shutil.copytree(killed, folder)
        return [*command, '--device', 'CPU', *ARGS, '--output', folder, '--resume', folder]
    return argv


def start_commands(tmp_path_factory):
    """The uninterrupted run, the run killed once ``KILL_AFTER`` is written, and two resumes of it:
    as a user resumes, and forgetting the AdamW moments (``FORGETFUL``)."""
    base = tmp_path_factory.mktemp('resume')
    full, killed = base / 'full', base / 'killed'
    script = base / 'forgetful_resume.py'
    script.write_text(FORGETFUL)
    runs = dict(full=train_command(*ARGS, '--output', full),
                killed=train_command(*ARGS, '--output', killed,
                                     kill_when=lambda: (killed / 'checkpoints' / KILL_AFTER).exists()))
    runs['resumed'] = Command(resume(killed, base / 'resumed', sys.executable, SCRIPT), after=[runs['killed']])
    runs['forgetful'] = Command(resume(killed, base / 'forgetful', sys.executable, script, SCRIPT),
                                after=[runs['killed']])
    return base, runs


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    base, commands = started(start_commands, tmp_path_factory)
    killed = commands['killed'].result(check=False)
    assert killed.returncode == -signal.SIGKILL, f'the run ended before {KILL_AFTER} appeared:\n{killed.stderr[-3000:]}'
    commands['full'].result()
    return base, commands


def test_kill_leaves_only_whole_checkpoints(runs):
    from tnt_train.checkpoint import read
    base, _ = runs
    killed = base / 'killed'
    files = [f for f in os.listdir(killed / 'checkpoints') if f.endswith('.ckpt')]
    assert KILL_AFTER in files
    for f in files:
        saved, meta, _ = read(str(killed / 'checkpoints' / f))   # CRC-checked
        assert meta['global_step'] > 0 and 'exp_avg.head.weight' in saved
    assert len(step_rows(killed / 'steps.csv')) < 44          # it really died mid-epoch


def test_resume_reproduces_the_uninterrupted_run(runs):
    base, commands = runs
    full, resumed = base / 'full', base / 'resumed'
    proc = commands['resumed'].result()
    resumed_at = int(proc.stdout.split('resumed at epoch 2 step ')[1].split()[0])
    assert 8 <= resumed_at < 22
    want, got = step_rows(full / 'steps.csv'), step_rows(resumed / 'steps.csv')
    assert len(got) == len(want) == 44
    assert got == want          # loss, LR, gradient norm of every step, bit for bit
    assert rows(resumed / 'metrics.csv') and [
        {k: r[k] for k in ('train_loss', 'val_loss', 'top1', 'top5')} for r in rows(resumed / 'metrics.csv')] == [
        {k: r[k] for k in ('train_loss', 'val_loss', 'top1', 'top5')} for r in rows(full / 'metrics.csv')]
    a, b = weights(full / 'model.ckpt'), weights(resumed / 'model.ckpt')
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_comparison_catches_a_resume_without_optimizer_moments(runs):
    from tnt_train.checkpoint import read, resolve_resume
    base, commands = runs
    resumed_at = read(resolve_resume(str(base / 'killed')))[1]['global_step']
    commands['forgetful'].result()
    want, got = step_rows(base / 'full' / 'steps.csv'), step_rows(base / 'forgetful' / 'steps.csv')
    assert got[:resumed_at] == want[:resumed_at]
    assert got[resumed_at + 1:] != want[resumed_at + 1:]
