"""Bad input: a one-line error, exit status 2, before any training, and nothing half-written."""
import os

import pytest

from parity_tests.helpers import train
from tnt_train.data import export_digits


def refused(*args):
    proc = train(*args, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, lines)
    assert lines[0].startswith('train_ascend.py: error: '), lines
    assert 'Traceback' not in proc.stdout + proc.stderr
    return lines[0]


def test_missing_data_folder(tmp_path):
    msg = refused('--data', tmp_path / 'nowhere', '--output', tmp_path / 'out')
    assert msg == f'train_ascend.py: error: data folder {tmp_path / "nowhere"} does not exist'


def test_empty_data_folders(tmp_path):
    (tmp_path / 'data').mkdir()
    assert refused('--data', tmp_path / 'data', '--output', tmp_path / 'out') == \
        f'train_ascend.py: error: data folder {tmp_path / "data" / "val"} does not exist'
    for split in ('train', 'val'):
        (tmp_path / 'data' / split / 'cat').mkdir(parents=True)
    assert refused('--data', tmp_path / 'data', '--output', tmp_path / 'out') == \
        f'train_ascend.py: error: data folder {tmp_path / "data" / "val"} holds no images (.jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp)'


def test_class_count_mismatch_with_data(tmp_path):
    msg = refused('--num-classes', 5, '--output', tmp_path / 'out')
    assert msg == f'train_ascend.py: error: --num-classes 5 but {export_digits()} has 10 classes'


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    msg = refused('--output', blocker / 'run')
    assert msg.startswith(f'train_ascend.py: error: output folder {blocker / "run"} is not writable')


@pytest.mark.parametrize('damage', ['garbage', 'truncated', 'flipped byte'])
def test_corrupt_checkpoint_on_resume(tmp_path, damage):
    import mindspore as ms
    from tnt_train.checkpoint import save_training_state
    good = tmp_path / 'epoch0001_step00000022.ckpt'
    params = [ms.Parameter(ms.Tensor([[1., 2.], [3., 4.]] * 500), name='w'), ms.Parameter(ms.Tensor(0), name='s')]
    save_training_state(params, str(good), {'epoch': 1})
    data = good.read_bytes()
    bad = {'garbage': b'not a checkpoint at all',
           'truncated': data[:len(data) // 2],
           'flipped byte': data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]}
    good.write_bytes(bad[damage])
    out = tmp_path / 'out'
    msg = refused('--resume', good, '--output', out)
    assert msg == f'train_ascend.py: error: checkpoint {good} is corrupt or not a training checkpoint (ValueError)'
    assert sorted(os.listdir(out)) == []          # nothing was written


def test_resume_from_a_folder_without_checkpoints(tmp_path):
    assert refused('--resume', tmp_path, '--output', tmp_path / 'out') == f'train_ascend.py: error: no checkpoint found in {tmp_path}'


HUB = ('train_ascend.py: error: --pretrained downloads weights from a model hub, which this trainer does not do; '
       'pass --initial-checkpoint FILE')


def test_pretrained_is_timms_hub_switch(tmp_path):
    out = tmp_path / 'out'
    assert refused('--pretrained', '--output', out) == HUB
    assert refused('--pretrained', tmp_path / 'weights.pth', '--output', out) == HUB    # a file goes elsewhere
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('pretrained: true\n')
    assert refused('-c', cfg, '--output', out) == HUB.replace('error: ', f'error: config {cfg}: ')
    assert not out.exists()


@pytest.mark.parametrize('text, message', [
    ('batch_sise: 32\n', "unknown key 'batch_sise' (did you mean 'batch_size'?)"),
    ('batch_size: many\n', "argument -b/--batch-size: invalid int value: 'many'"),
    ('model_ema: 3\n', 'model_ema is a switch: true or false, not 3'),
    ('- batch_size\n', 'not a mapping of settings (key: value)'),
    ('aa: [rand\n', 'not valid YAML (line 2)'),
    (None, 'cannot read it (No such file or directory)'),
])
def test_bad_config(tmp_path, text, message):
    cfg = tmp_path / 'c.yaml'
    if text is not None:
        cfg.write_text(text)
    assert refused('-c', cfg, '--output', tmp_path / 'out') == f'train_ascend.py: error: config {cfg}: {message}'


@pytest.mark.parametrize('args, message', [
    (['--aa', 'augmix-m5'], '--aa: RandAugment config must start with "rand": \'augmix-m5\''),
    (['--scale', 0.9, 0.5], '--scale 0.9 0.5: needs 0 < MIN <= MAX'),
    (['--mixup-switch-prob', 1.5], '--mixup-switch-prob 1.5 is not a probability'),
])
def test_bad_timm_settings(tmp_path, args, message):
    assert refused(*args, '--output', tmp_path / 'out') == f'train_ascend.py: error: {message}'
