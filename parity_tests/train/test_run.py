"""The README's main job, shortened: ``python train_ascend.py`` (digits, tnt_tiny, CPU) end to end.

The run is ``helpers.digits_run``, which the tools' tests read too.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from parity_tests.helpers import DIGITS_EPOCHS as EPOCHS, digits_run, rows, started, train_command, weights


def start_commands(tmp_path_factory):
    """The shared digits run, and ``--eval-only --resume`` of it once it has ended."""
    out, training = started(digits_run, tmp_path_factory)
    return out, training, train_command('--eval-only', '--resume', out, '--output', tmp_path_factory.mktemp('eval'),
                                        after=[training])


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out, training, _ = started(start_commands, tmp_path_factory)
    return out, training.result()


def test_trains_and_learns(run):
    out, proc = run
    epochs = rows(out / 'metrics.csv')
    assert [int(r['epoch']) for r in epochs] == list(range(1, EPOCHS + 1))
    top1 = [float(r['top1']) for r in epochs]
    loss = [float(r['train_loss']) for r in epochs]
    assert top1[-1] >= 60., top1            # chance is 10 %
    assert loss[-1] < loss[0] - 0.2, loss
    assert all(float(r['img_per_s']) > 0 and float(r['step_ms']) > 0 for r in epochs)
    steps = rows(out / 'steps.csv')
    assert len(steps) == EPOCHS * int(epochs[0]['global_step'])
    assert [int(r['global_step']) for r in steps] == list(range(1, len(steps) + 1))
    assert f'epoch {EPOCHS}/{EPOCHS}: train loss' in proc.stdout and 'img/s' in proc.stdout


def test_writes_records_checkpoints_and_exports(run):
    out, proc = run
    fingerprint = [line for line in proc.stdout.splitlines() if line.startswith('rank 0: weights sha256 ')]
    assert len(fingerprint) == 1 and fingerprint[0] in (out / 'train.log').read_text().splitlines()
    assert (out / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    record = json.loads((out / 'metrics.json').read_text())
    assert [float(e['top1']) for e in record['epochs']] == [float(r['top1']) for r in rows(out / 'metrics.csv')]
    assert f'epoch {EPOCHS}/{EPOCHS}: train loss' in (out / 'train.log').read_text()
    ckpts = sorted(os.listdir(out / 'checkpoints'))
    assert ckpts == ['best.ckpt'] + [f'epoch{e:04d}_step{e * 22:08d}.ckpt' for e in range(1, EPOCHS + 1)]
    final = weights(out / 'model.ckpt')
    last = weights(out / 'checkpoints' / ckpts[-1])
    assert all(np.array_equal(final[k], last[k]) for k in final)   # the last checkpoint holds the final weights
    assert {'exp_avg.head.weight', 'lr_schedule.step', 'state_step'} <= set(last)
    assert (out / 'tnt.mindir').stat().st_size > 100_000


def test_eval_only_reproduces_the_logged_accuracy(run, tmp_path_factory):
    out, _ = run
    logged = rows(out / 'metrics.csv')[-1]
    evaluation = started(start_commands, tmp_path_factory)[2]
    proc = evaluation.result()
    line = [l for l in proc.stdout.splitlines() if 'top-1' in l][-1]
    assert f"top-1 {float(logged['top1']):.2f} top-5 {float(logged['top5']):.2f}" in line, (line, logged)
    assert (Path(evaluation.argv[-1]) / 'train.log').read_text().splitlines()[-1] == line    # --output's log


def test_exported_mindir_matches_the_model(run):
    import mindspore as ms
    import mindspore_tnt
    from convert.transfer import numpy_to_mindspore
    from convert.keymap import TIMM_TO_MINDSPORE
    out, _ = run
    ms.set_context(mode=ms.GRAPH_MODE)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    graph = ms.nn.GraphCell(ms.load(str(out / 'tnt.mindir')))
    net = mindspore_tnt.create_model('tnt_tiny_patch16_64', num_classes=10, img_size=32)
    numpy_to_mindspore({TIMM_TO_MINDSPORE.backward(k): v for k, v in weights(out / 'model.ckpt').items()}, net)
    net.set_train(False)
    np.testing.assert_allclose(graph(ms.Tensor(x)).asnumpy(), net(ms.Tensor(x)).asnumpy(), rtol=1e-5, atol=1e-6)


def test_the_runs_settings_run_it_again(run):
    """``args.yaml`` holds every setting of the run, as timm's; ``-c`` of it sets them all again."""
    import yaml
    import train_ascend
    out, proc = run
    saved = yaml.safe_load((out / 'args.yaml').read_text())
    expected = {'preset': 'digits', 'model': 'tnt_tiny_patch16_64', 'img_size': 32, 'epochs': EPOCHS, 'amp': 'O0',
                'loss_scale': 0., 'lr_base': 0.002, 'scale': [0.5, 1.], 'output': str(out)}
    assert {k: saved.get(k) for k in expected} == expected, saved
    assert f"peak LR {saved['lr']:.3g}" in proc.stdout      # the LR the run computed, absolute
    assert train_ascend.settings(train_ascend.parse_args(['-c', str(out / 'args.yaml')])) == saved
