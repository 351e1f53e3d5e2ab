"""Killing training with SIGKILL mid-epoch and resuming reproduces the uninterrupted run exactly.

The killed run dies by SIGKILL while it writes a checkpoint (``DYING``): the point where a
kill can do most harm, and a point the test chooses, so the kill does not race the run.
The runs use the recipe's random augmentations (RandAugment, erasing, Mixup/CutMix), drop
path, the EMA and AMP O2 (whose dynamic loss scale backs off from 2^24 in the first epoch), so
the data order, every augmentation, every drop-path mask, the EMA weights and the loss scale
must be restored too. Every run is queued at the start of the session; the resumes work on copies
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
        '--mixup', 0.8, '--cutmix', 1.0, '--drop-path', 0.1, '--model-ema', '--amp', 'O2']
LAST_WHOLE = 'epoch0001_step00000030.ckpt'    # 8 steps into the second epoch of 22 steps
KILLED_WRITING = 'epoch0001_step00000035.ckpt'
STALE = '.metrics.json.tmp-killed.json'    # as a kill while metrics.json is written leaves it
USERS = '.notes.tmp-keep'                  # a file of the user's the run must leave alone
COMPARED = ('global_step', 'epoch', 'loss', 'lr', 'grad_norm', 'loss_scale', 'overflow')

# Training that SIGKILLs itself halfway through writing the checkpoint named by argv[1]: the
# temporary is cut to half its bytes first, as a kill during the write leaves it.
DYING = '''
import contextlib, os, runpy, signal, sys
import tnt_train.checkpoint as ckpt
atomic_output, name = ckpt.atomic_output, sys.argv[1]
@contextlib.contextmanager
def dying(path, *args, **kwargs):
    with atomic_output(path, *args, **kwargs) as tmp:
        yield tmp
        if os.path.basename(path) == name:
            os.truncate(tmp, os.path.getsize(tmp) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
ckpt.atomic_output = dying
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''

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


def resume(killed, folder, *command, cut_row=''):
    """``command ARGS --resume folder`` on a copy ``folder`` of the killed run, made when it starts,
    with ``cut_row`` appended to its steps.csv and a records file half-written (``STALE``)."""
    def argv():
        shutil.copytree(killed, folder)
        with open(folder / 'steps.csv', 'a') as f:
            f.write(cut_row)
        (folder / STALE).write_text('{"epochs": [')
        (folder / USERS).write_text('not the run\'s')
        return [*command, '--device', 'CPU', *ARGS, '--output', folder, '--resume', folder]
    return argv


def start_commands(tmp_path_factory):
    """The uninterrupted run, the run killed while writing ``KILLED_WRITING``, and two resumes of
    it: as a user resumes (its steps.csv ending in a row cut short), and forgetting the AdamW
    moments (``FORGETFUL``)."""
    base = tmp_path_factory.mktemp('resume')
    full, killed = base / 'full', base / 'killed'
    dying, forgetful = base / 'dying_train.py', base / 'forgetful_resume.py'
    dying.write_text(DYING)
    forgetful.write_text(FORGETFUL)
    runs = dict(full=train_command(*ARGS, '--output', full),
                killed=Command([sys.executable, dying, KILLED_WRITING, SCRIPT, '--device', 'CPU', *ARGS,
                                '--output', killed]))
    # the first character of a step row, as a crash while writing it leaves it: its step reads 3
    runs['resumed'] = Command(resume(killed, base / 'resumed', sys.executable, SCRIPT, cut_row='3'),
                              after=[runs['killed']])
    # into a folder of its own, as a user resumes elsewhere: it takes the killed run's records
    runs['forgetful'] = Command([sys.executable, forgetful, SCRIPT, '--device', 'CPU', *ARGS,
                                 '--output', base / 'forgetful', '--resume', killed], after=[runs['killed']])
    # the run's EMA and loss scale: evaluated without naming them, a resume without --model-ema refused
    runs['evaluated'] = train_command('--amp', 'O2', '--eval-only', '--resume', full, after=[runs['full']])
    runs['no_ema'] = train_command(*[a for a in ARGS if a != '--model-ema'], '--resume', killed,
                                   after=[runs['resumed'], runs['forgetful']])
    return base, runs


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    base, commands = started(start_commands, tmp_path_factory)
    killed = commands['killed'].result(check=False)
    assert killed.returncode == -signal.SIGKILL, f'the run did not die writing {KILLED_WRITING}:\n{killed.stderr[-3000:]}'
    commands['full'].result()
    return base, commands


def test_kill_leaves_only_whole_checkpoints(runs):
    from tnt_train.errors import InputError
    from tnt_train.checkpoint import read, resolve_resume
    base, _ = runs
    folder = base / 'killed' / 'checkpoints'
    files = os.listdir(folder)
    half_written = [f for f in files if f.startswith(f'.{KILLED_WRITING}.tmp-')]
    assert len(half_written) == 1 and KILLED_WRITING not in files      # it died writing one
    with pytest.raises(InputError, match='corrupt'):
        read(str(folder / half_written[0]))
    whole = [f for f in files if f.endswith('.ckpt') and not f.startswith('.')]
    assert LAST_WHOLE in whole
    for f in whole:
        saved, meta, _ = read(str(folder / f))   # CRC-checked
        assert 'exp_avg.head.weight' in saved
        assert f == 'best.ckpt' or meta['global_step'] == int(f.split('_step')[1].split('.')[0]), f
    meta = read(str(folder / LAST_WHOLE))[1]
    assert (meta['epoch'], meta['step_in_epoch'], meta['global_step']) == (1, 8, 30)
    assert resolve_resume(str(base / 'killed')) == str(folder / LAST_WHOLE)
    assert len(step_rows(base / 'killed' / 'steps.csv')) < 44          # it really died mid-epoch


def test_resume_reproduces_the_uninterrupted_run(runs):
    base, commands = runs
    full, resumed = base / 'full', base / 'resumed'
    proc = commands['resumed'].result()
    resumed_at = int(proc.stdout.split('resumed at epoch 2 step ')[1].split()[0])
    assert resumed_at == 8
    assert not [f for f in os.listdir(resumed / 'checkpoints') if f.startswith('.')]   # the temporaries removed
    assert [f for f in os.listdir(resumed) if f.startswith('.')] == [USERS]
    want, got = step_rows(full / 'steps.csv'), step_rows(resumed / 'steps.csv')
    assert len(got) == len(want) == 44
    assert got == want          # loss, LR, gradient norm of every step, bit for bit
    assert len(set(r[-2] for r in want)) > 1 and '1' in [r[-1] for r in want]   # the loss scale backed off
    logged = ('train_loss', 'val_loss', 'top1', 'top5', 'ema_top1', 'ema_top5', 'overflow_steps')
    assert rows(resumed / 'metrics.csv') and [
        {k: r[k] for k in logged} for r in rows(resumed / 'metrics.csv')] == [
        {k: r[k] for k in logged} for r in rows(full / 'metrics.csv')]
    a, b = weights(full / 'model.ckpt'), weights(resumed / 'model.ckpt')
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_comparison_catches_a_resume_without_optimizer_moments(runs):
    from tnt_train.checkpoint import read, resolve_resume
    base, commands = runs
    resumed_at = read(resolve_resume(str(base / 'killed')))[1]['global_step']
    commands['forgetful'].result()
    want, got = step_rows(base / 'full' / 'steps.csv'), step_rows(base / 'forgetful' / 'steps.csv')
    assert got[:resumed_at] == want[:resumed_at]       # the killed run's records, in the new folder
    assert got[resumed_at + 1:] != want[resumed_at + 1:]


def test_eval_only_takes_the_runs_ema_and_a_resume_needs_it(runs):
    base, commands = runs
    logged = rows(base / 'full' / 'metrics.csv')[-1]
    line = [ln for ln in commands['evaluated'].result().stdout.splitlines() if 'top-1' in ln][-1]
    assert (f"top-1 {float(logged['top1']):.2f} top-5 {float(logged['top5']):.2f}" in line and
            f"EMA top-1 {float(logged['ema_top1']):.2f} top-5 {float(logged['ema_top5']):.2f}" in line), (line, logged)
    proc = commands['no_ema'].result(check=False)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
    assert 'was written with an EMA of the weights: resume with --model-ema' in proc.stderr
