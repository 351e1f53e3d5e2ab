"""Fine-tuning from a PyTorch file: ``--initial-checkpoint`` loads a torch_ref .pth through ``convert``.

Every run is queued at the start of the session; the tests compare what they print and write
with torch_ref in this process.
"""
import shutil
import sys

import numpy as np
import pytest
import torch

import torch_ref
from convert.transfer import numpy_to_torch
from tnt_common.compare import FP32_BOUND, rel_err
from tnt_common.fixtures import random_timm_weights
from parity_tests.helpers import SCRIPT, Command, rows, started, train_command, weights
from tnt_train.data import check_dataset, eval_dataset, export_digits

NAME = 'tnt_tiny_patch16_64'


def torch_file(path, num_classes, seed=0):
    model = torch_ref.create_model(NAME, num_classes=num_classes, weight_init='skip')
    numpy_to_torch(random_timm_weights({k: v.shape for k, v in model.state_dict().items()}, seed), model)
    torch.save(model.state_dict(), path)
    return model


def torch_eval(model, img_size):
    """Loss and top-1 of ``model`` on the digits val set, through the training code's eval pipeline."""
    root = export_digits()
    data = eval_dataset(root, check_dataset(root), img_size, 0.9, 100)
    model.eval()
    losses, hits = [], []
    with torch.no_grad():
        for images, labels in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
            logits = model(torch.from_numpy(images))
            labels = torch.from_numpy(labels.astype(np.int64))
            losses.append(torch.nn.functional.cross_entropy(logits, labels, reduction='none').numpy())
            hits.append((logits.argmax(-1) == labels).numpy())
    return float(np.concatenate(losses).mean()), 100. * float(np.concatenate(hits).mean())


def reported(proc):
    line = [l for l in proc.stdout.splitlines() if ' top-1 ' in l][-1]
    return float(line.split(' loss ')[1].split()[0]), float(line.split(' top-1 ')[1].split()[0])


def mindcv_file(path):
    """A MindCV checkpoint of random weights (seed 2), and torch_ref holding them with MindCV's numerics
    (tanh GELU, final eps 1e-7), the outer stream scaled down so that the final norm's eps decides
    the output."""
    import mindspore as ms
    from parity_tests.helpers import small_outer_stream, to_mindcv
    from tnt_common.numerics import PRESETS
    model = torch_ref.create_model(NAME, num_classes=10, weight_init='skip', **PRESETS['mindcv'].model_kwargs())
    state = small_outer_stream(random_timm_weights({k: v.shape for k, v in model.state_dict().items()}, 2))
    numpy_to_torch(state, model)
    ms.save_checkpoint([{'name': k, 'data': ms.Tensor(v)} for k, v in to_mindcv(state).items()], str(path))
    return model


def resumed(folder, copy, *args):
    """``train_ascend.py args --resume`` of a copy of run ``folder``, made when it starts."""
    def argv():
        shutil.copytree(folder, copy)
        return [sys.executable, SCRIPT, '--device', 'CPU', *args, '--output', copy, '--resume', copy]
    return argv


def start_commands(tmp_path_factory):
    """The files (torch_ref models beside them) and every run of this module."""
    d = tmp_path_factory.mktemp('finetune')
    ten, thousand, mindcv = d / 'tnt_tiny_10.pth', d / 'tnt_tiny_1000.pth', d / 'mindcv_tiny_10.ckpt'
    models = dict(ten=torch_file(ten, 10), thousand=torch_file(thousand, 1000, seed=1), mindcv=mindcv_file(mindcv))
    numerics = train_command('--model', NAME, '--img-size', 32, '--epochs', 1, '--numerics', 'zoo', '--export',
                             '--output', d / 'numerics')
    runs = dict(
        numerics=numerics,
        numerics_resumed=Command(resumed(d / 'numerics', d / 'numerics_resumed', '--model', NAME, '--img-size', 32,
                                         '--epochs', 2), after=[numerics]),   # no --numerics
        finetune=train_command('--initial-checkpoint', thousand, '--num-classes', 10, '--model', NAME,
                               '--img-size', 32, '--epochs', 1, '--output', d / 'finetune'),
        eval_ten=train_command('--eval-only', '--initial-checkpoint', ten, '--model', NAME, '--output', d / 'eval'),
        eval_init=train_command('--eval-only', '--model', NAME, '--output', d / 'init'),
        mismatch=train_command('--initial-checkpoint', thousand, '--model', NAME, '--output', d / 'mismatch'),
        eval_mindcv=train_command('--eval-only', '--initial-checkpoint', mindcv, '--model', NAME,
                                  '--output', d / 'mindcv'),
        eval_mindcv_as_pytorch=train_command('--eval-only', '--initial-checkpoint', mindcv, '--model', NAME,
                                             '--numerics', 'pytorch', '--output', d / 'mindcv_as_pytorch'))
    return d, models, runs


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """(folder, {name: torch model}, {name: Command})."""
    return started(start_commands, tmp_path_factory)


def test_eval_of_a_torch_file_matches_torch(files):
    _, models, runs = files
    loss, top1 = reported(runs['eval_ten'].result())
    want_loss, want_top1 = torch_eval(models['ten'], 64)
    assert abs(loss - want_loss) <= 1e-4 * max(1., want_loss) and top1 == round(want_top1, 2), \
        (loss, top1, want_loss, want_top1)


def test_comparison_catches_ignored_pretrained_weights(files):
    """Planted fault: the same evaluation on the model's own initialisation instead of the file."""
    _, models, runs = files
    loss, _ = reported(runs['eval_init'].result())
    assert abs(loss - torch_eval(models['ten'], 64)[0]) > 0.1


def test_finetune_replaces_the_head(files):
    d, models, runs = files
    runs['finetune'].result()
    out = d / 'finetune'
    assert len(rows(out / 'metrics.csv')) == 1
    tuned = weights(out / 'model.ckpt')
    assert tuned['head.weight'].shape == (10, 96) and tuned['patch_pos'].shape == (1, 5, 96)
    # one epoch of AdamW moves every weight only a little from the loaded torch values
    start = models['thousand'].state_dict()['blocks.0.attn_out.qk.weight'].numpy()
    assert 0 < rel_err(tuned['blocks.0.attn_out.qk.weight'], start) < 0.05


def test_head_class_count_mismatch_is_refused(files):
    d, _, runs = files
    proc = runs['mismatch'].result(check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f'train_ascend.py: error: --initial-checkpoint {d / "tnt_tiny_1000.pth"} has a 1000-class head but the data '
        f'has 10 classes; pass --num-classes 10 to replace the head']
    assert not (d / 'mismatch' / 'checkpoints').exists()


def test_eval_of_a_mindcv_file_keeps_its_numerics(files):
    """A MindCV checkpoint evaluates with MindCV's numerics (tanh GELU, final eps 1e-7), as
    torch_ref does with them; forcing PyTorch's numerics, planted, moves the loss (the
    outer stream scaled down so that the final norm's eps decides the output)."""
    _, models, runs = files
    want_loss, want_top1 = torch_eval(models['mindcv'], 64)
    loss, top1 = reported(runs['eval_mindcv'].result())
    assert abs(loss - want_loss) <= 1e-4 * max(1., want_loss) and top1 == round(want_top1, 2), \
        (loss, top1, want_loss, want_top1)
    wrong, _ = reported(runs['eval_mindcv_as_pytorch'].result())
    assert abs(wrong - want_loss) > 1e-4 * max(1., want_loss), (wrong, want_loss)


def test_run_records_its_numerics(files):
    """Every checkpoint a run writes carries its numerics; --resume rebuilds them."""
    import json
    import mindspore as ms
    d, _, runs = files
    runs['numerics'].result()
    out = d / 'numerics'
    zoo = {'gelu': 'tanh', 'norm_eps': 1e-7, 'final_norm_eps': 1e-7}
    assert json.loads(ms.load_checkpoint(str(out / 'model.ckpt'))['tnt_numerics']) == zoo
    latest = sorted((out / 'checkpoints').glob('*.ckpt'))[-1]
    assert json.loads(ms.load_checkpoint(str(latest))['tnt_numerics']) == zoo
    from convert.api import read_hub
    assert read_hub(out / 'model.ckpt')[0].numerics.model_kwargs() == zoo
    runs['numerics_resumed'].result()
    resumed_out = d / 'numerics_resumed'
    assert len(rows(resumed_out / 'metrics.csv')) == 2
    assert json.loads(ms.load_checkpoint(str(resumed_out / 'model.ckpt'))['tnt_numerics']) == zoo


def test_export_keeps_the_run_numerics(files):
    """--export writes the trained weights computing the run's numerics (MindSpore zoo's: tanh GELU, eps
    1e-7), without a custom operator; the same weights with PyTorch's numerics, planted, are told apart."""
    import mindspore as ms
    from convert.api import load_torch_into_mindspore
    d, _, runs = files
    runs['numerics'].result()
    out = d / 'numerics'
    assert b'Custom' not in (out / 'tnt.mindir').read_bytes()
    ms.set_context(mode=ms.GRAPH_MODE)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    got = ms.nn.GraphCell(ms.load(str(out / 'tnt.mindir')))(x).asnumpy()
    for numerics, same in (('zoo', True), ('pytorch', False)):
        net = load_torch_into_mindspore(out / 'model.ckpt', NAME, img_size=32, numerics=numerics)
        net.set_train(False)
        assert (rel_err(got, net(x).asnumpy()) < FP32_BOUND) == same, numerics
