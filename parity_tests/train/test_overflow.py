"""The compiled train step skips a step whose gradients are not finite, reports it, and backs off
the loss scale; no NaN or Inf ever reaches the weights, the AdamW moments or the EMA."""
import os

import mindspore as ms
import numpy as np
import pytest

import mindspore_tnt
from parity.forward import set_mode
from parity_tests.helpers import rows, started, train_command, weights
from tnt_train.checkpoint import state_parameters
from tnt_train.ema import EMA
from tnt_train.optim import create_optimizer
from tnt_train.train_step import TrainStep, dynamic_loss_scaler

NAME, SIZE, BATCH, CLASSES = 'tnt_tiny_patch16_64', 32, 4, 10


def snapshot(params):
    return {p.name: p.asnumpy().copy() for p in params}


def changed(before, after, ignore=()):
    """Names whose values differ (bitwise) between two snapshots."""
    return sorted(k for k in before if k not in ignore and not np.array_equal(before[k], after[k]))


def non_finite(snap):
    return sorted(k for k, v in snap.items() if v.dtype.kind == 'f' and not np.isfinite(v).all())


def start_commands(tmp_path_factory):
    """The end-to-end AMP O2 run, then it evaluated and resumed without ``--amp`` (CPU's default:
    O0, no loss scale), queued at the start of the session."""
    out = tmp_path_factory.mktemp('amp_o2')
    run = train_command('--amp', 'O2', '--epochs', 1, '--output', out)
    evaluated = train_command('--eval-only', '--resume', out, after=[run])
    return out, run, evaluated, train_command('--epochs', 2, '--resume', out, after=[evaluated])


@pytest.fixture(scope='module')
def setup():
    ms.set_device('CPU')
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    net = mindspore_tnt.create_model(NAME, num_classes=CLASSES, img_size=SIZE, drop_path_rate=0.1)
    optimizer, schedule = create_optimizer(net, [1e-3] * 10)
    scaler = dynamic_loss_scaler(init=2. ** 10, window=2, factor=2)
    ema = EMA(net, 0.9)
    step = TrainStep(net, optimizer, schedule, clip_grad=5., loss_scaler=scaler, ema=ema)
    step.set_train(True)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32)
    targets = np.eye(CLASSES, dtype=np.float32)[np.arange(BATCH) % CLASSES]
    poisoned = images.copy()
    poisoned[1, 0, 3, 3] = np.inf    # one bad pixel: NaN loss and gradients
    state = state_parameters(step, scaler.scale_value, scaler.counter)
    return step, optimizer, state, [ms.Tensor(a) for a in (images, poisoned, targets)]


def run(step, images, targets):
    loss, norm, finite, scale, lr = step(images, targets)
    return float(loss.asnumpy()), bool(finite.asnumpy()), float(scale.asnumpy())


def test_overflow_skips_the_update_and_backs_off(setup):
    step, optimizer, state, (images, poisoned, targets) = setup
    loss, finite, scale = run(step, images, targets)
    assert finite and np.isfinite(loss) and scale == 2. ** 10

    before = snapshot(state)
    loss, finite, scale = run(step, poisoned, targets)
    after = snapshot(state)
    assert not finite and not np.isfinite(loss)
    assert scale == 2. ** 10                               # the scale this step ran with
    # nothing moved but the loss-scale state and the LR schedule's step counter
    assert changed(before, after) == ['loss_scale.counter', 'loss_scale.value', 'lr_schedule.step']
    assert after['loss_scale.value'] == 2. ** 9
    assert non_finite(after) == []

    loss, finite, scale = run(step, images, targets)       # training goes on at the lower scale
    assert finite and scale == 2. ** 9
    moved = changed(after, snapshot(state), ignore=('loss_scale.counter', 'lr_schedule.step'))
    assert 'blocks.0.attn_in.qk.weight' in moved and 'exp_avg.blocks.0.attn_in.qk.weight' in moved
    assert 'ema.blocks.0.attn_in.qk.weight' in moved and 'state_step' in moved
    run(step, images, targets)                             # two finite steps (window 2): scale grows
    assert float(snapshot(state)['loss_scale.value']) == 2. ** 10


def test_check_catches_an_unguarded_update(setup):
    """Planted fault: the same gradients applied without the finiteness guard poison the weights
    (in PyNative mode: the fault is in what is applied, not in how it is compiled)."""
    step, optimizer, state, (images, poisoned, targets) = setup
    set_mode('pynative')
    grad_fn = ms.value_and_grad(step.net_with_loss, None, optimizer.parameters)
    _, grads = grad_fn(poisoned, targets)
    before = snapshot(state)
    optimizer(grads)
    after = snapshot(state)
    assert 'blocks.0.attn_in.qk.weight' in non_finite(after)
    assert len(changed(before, after)) > 100


def test_amp_o2_run_reports_skipped_steps(tmp_path_factory):
    """End to end: fp16 gradients at the recipe's initial scale 2^24 overflow; the run backs off and says so."""
    out, run, _, _ = started(start_commands, tmp_path_factory)
    proc = run.result()
    steps = rows(out / 'steps.csv')
    skipped = [int(r['global_step']) for r in steps if r['overflow'] == '1']
    assert skipped and skipped[0] == 1 and len(skipped) < len(steps)
    scales = [float(r['loss_scale']) for r in steps]
    assert scales[0] == 2. ** 24
    for before, after, r in zip(scales, scales[1:], steps):       # halved after every skipped step
        assert after == (before / 2 if r['overflow'] == '1' else before)
    for s in skipped:
        assert f'step {s}: non-finite gradients at loss scale' in proc.stdout
    assert f'{len(skipped)} skipped steps' in proc.stdout
    assert all(np.isfinite(v).all() for v in weights(out / 'model.ckpt').values())


def test_amp_run_evaluates_without_amp_and_resumes_only_with_it(tmp_path_factory):
    """Evaluation takes no loss scale: ``--eval-only --resume`` of the O2 run evaluates it in fp32; a
    resume that would train on without the run's loss scale is refused in one line naming it."""
    out, run, evaluated, resumed = started(start_commands, tmp_path_factory)
    run.result()
    before = sorted(os.listdir(out / 'checkpoints'))
    logged = rows(out / 'metrics.csv')[-1]
    line = [ln for ln in evaluated.result().stdout.splitlines() if 'top-1' in ln][-1]
    top1 = float(line.split('top-1 ')[1].split()[0])
    assert '(360 images)' in line and abs(top1 - float(logged['top1'])) <= 1., (line, logged)  # fp32 against fp16
    proc = resumed.result(check=False)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
    assert 'was written with a dynamic loss scale: resume with the --amp and --loss-scale the run had' in proc.stderr
    assert sorted(os.listdir(out / 'checkpoints')) == before
