"""Fine-tuning from a PyTorch file: ``--initial-checkpoint`` loads a torch_ref .pth through ``convert``."""
import numpy as np
import pytest
import torch

import torch_ref
from convert.transfer import numpy_to_torch
from tnt_common.fixtures import random_timm_weights
from parity_tests.helpers import rows, train, weights
from tnt_train.data import check_dataset, eval_dataset, export_digits

NAME = 'tnt_tiny_patch16_64'


def torch_file(path, num_classes, seed=0):
    model = torch_ref.create_model(NAME, num_classes=num_classes)
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


@pytest.fixture(scope='module')
def ten_class(tmp_path_factory):
    path = tmp_path_factory.mktemp('pth') / 'tnt_tiny_10.pth'
    return path, torch_file(path, 10)


def test_eval_of_a_torch_file_matches_torch(ten_class, tmp_path):
    path, model = ten_class
    loss, top1 = reported(train('--eval-only', '--initial-checkpoint', path, '--model', NAME, '--output', tmp_path))
    want_loss, want_top1 = torch_eval(model, 64)
    assert abs(loss - want_loss) <= 1e-4 * max(1., want_loss) and top1 == round(want_top1, 2), \
        (loss, top1, want_loss, want_top1)


def test_comparison_catches_ignored_pretrained_weights(ten_class, tmp_path):
    """Planted fault: the same evaluation on the model's own initialisation instead of the file."""
    _, model = ten_class
    loss, _ = reported(train('--eval-only', '--model', NAME, '--output', tmp_path))
    assert abs(loss - torch_eval(model, 64)[0]) > 0.1


def test_finetune_replaces_the_head(tmp_path):
    path = tmp_path / 'tnt_tiny_1000.pth'
    model = torch_file(path, 1000, seed=1)
    out = tmp_path / 'run'
    train('--initial-checkpoint', path, '--num-classes', 10, '--model', NAME, '--img-size', 32, '--epochs', 1,
          '--output', out)
    assert len(rows(out / 'metrics.csv')) == 1
    tuned = weights(out / 'model.ckpt')
    assert tuned['head.weight'].shape == (10, 96) and tuned['patch_pos'].shape == (1, 5, 96)
    # one epoch of AdamW moves every weight only a little from the loaded torch values
    start = model.state_dict()['blocks.0.attn_out.qk.weight'].numpy()
    assert np.abs(tuned['blocks.0.attn_out.qk.weight'] - start).max() < 0.05 * np.abs(start).max()


def test_head_class_count_mismatch_is_refused(tmp_path):
    path = tmp_path / 'tnt_tiny_1000.pth'
    torch_file(path, 1000)
    proc = train('--initial-checkpoint', path, '--model', NAME, '--output', tmp_path / 'run', check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f'train_ascend.py: error: --initial-checkpoint {path} has a 1000-class head but the data has 10 classes; '
        f'pass --num-classes 10 to replace the head']
    assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_eval_of_a_mindcv_file_keeps_its_numerics(tmp_path):
    """A MindCV checkpoint evaluates with MindCV's numerics (tanh GELU, final eps 1e-7), as
    torch_ref does with them; forcing PyTorch's numerics, planted, moves the loss (the
    outer stream scaled down so that the final norm's eps decides the output)."""
    import mindspore as ms
    from parity_tests.helpers import small_outer_stream, to_mindcv
    from tnt_common.numerics import PRESETS
    model = torch_ref.create_model(NAME, num_classes=10, **PRESETS['mindcv'].model_kwargs())
    state = small_outer_stream(random_timm_weights({k: v.shape for k, v in model.state_dict().items()}, 2))
    numpy_to_torch(state, model)
    path = tmp_path / 'mindcv_tiny_10.ckpt'
    ms.save_checkpoint([{'name': k, 'data': ms.Tensor(v)} for k, v in to_mindcv(state).items()], str(path))
    want_loss, want_top1 = torch_eval(model, 64)
    loss, top1 = reported(train('--eval-only', '--initial-checkpoint', path, '--model', NAME,
                                '--output', tmp_path / 'a'))
    assert abs(loss - want_loss) <= 1e-4 * max(1., want_loss) and top1 == round(want_top1, 2), \
        (loss, top1, want_loss, want_top1)
    wrong, _ = reported(train('--eval-only', '--initial-checkpoint', path, '--model', NAME, '--numerics', 'pytorch',
                              '--output', tmp_path / 'b'))
    assert abs(wrong - want_loss) > 1e-4 * max(1., want_loss), (wrong, want_loss)


def test_run_records_its_numerics(tmp_path):
    """Every checkpoint a run writes carries its numerics; --resume rebuilds them."""
    import json
    import mindspore as ms
    out = tmp_path / 'run'
    train('--model', NAME, '--img-size', 32, '--epochs', 1, '--numerics', 'zoo', '--output', out)
    zoo = {'gelu': 'tanh', 'norm_eps': 1e-7, 'final_norm_eps': 1e-7}
    assert json.loads(ms.load_checkpoint(str(out / 'model.ckpt'))['tnt_numerics']) == zoo
    latest = sorted((out / 'checkpoints').glob('*.ckpt'))[-1]
    assert json.loads(ms.load_checkpoint(str(latest))['tnt_numerics']) == zoo
    from convert.api import read_hub
    assert read_hub(out / 'model.ckpt')[0].numerics.model_kwargs() == zoo
    train('--model', NAME, '--img-size', 32, '--epochs', 2, '--output', out, '--resume', out)  # no --numerics
    assert json.loads(ms.load_checkpoint(str(out / 'model.ckpt'))['tnt_numerics']) == zoo
