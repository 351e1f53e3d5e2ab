"""PyramidTNT through the commands, as a user runs them, on ``ptnt_tiny_patch16_64``.

``train_ascend.py --model ptnt_tiny_patch16_64`` (digits at 64x64, one epoch, drop path with
the host-fed noise, EMA with the BatchNorm statistics, MindIR export); ``tnt-validate`` of the
weights it saved; ``tnt-predict``, ``tnt-export`` (MindIR and ONNX) of a random 1000-class
file in the official PyTorch layout; ``python -m bench`` on the tiny variant. All are queued
at the start of the session (``start_commands``) and run while the quick checks do.
"""
import json
import sys

import numpy as np
import pytest

from parity_tests.helpers import Command, call, rows, started, tool, train_command, weights

TINY = 'ptnt_tiny_patch16_64'


def write_files(d):
    """Two 1000-class tiny PyramidTNTs in the official layout (random weights and BatchNorm
    statistics, seeds 0 and 1) and a sample photo."""
    import torch
    import torch_ref
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from tnt_common.fixtures import random_pyramid_weights
    shapes = {k: v.shape for k, v in torch_ref.create_model(TINY, weight_init='skip').state_dict().items()}
    for seed, name in enumerate(('ptnt_tiny.pth', 'ptnt_tiny_other.pth')):
        torch.save({k: torch.from_numpy(v) for k, v in random_pyramid_weights(shapes, seed).items()}, d / name)
    Image.fromarray(load_sample_images().images[0]).save(d / 'china.jpg', quality=90)
    return d


def start_commands(tmp_path_factory):
    from tnt_train.data import export_digits
    out = tmp_path_factory.mktemp('ptnt_run')
    files = write_files(tmp_path_factory.mktemp('ptnt_files'))
    data = export_digits()
    training = train_command('--model', TINY, '--epochs', 1, '--drop-path', 0.1, '--model-ema', '--export',
                             '--output', out)
    return dict(
        out=out, files=files, data=data, training=training,
        validate=tool('tnt-validate', out / 'model.ckpt', data, '--results-file', out / 'validate.json',
                      after=[training]),
        predict=tool('tnt-predict', files / 'ptnt_tiny.pth', files / 'china.jpg', '--json'),
        mindir=tool('tnt-export', files / 'ptnt_tiny.pth', files / 'ptnt_tiny.mindir'),
        onnx=tool('tnt-export', files / 'ptnt_tiny.pth', files / 'ptnt_tiny.onnx', '--dynamic-batch'),
        bench=Command([sys.executable, '-m', 'bench', '--models', TINY, '--batches', 2, '--tasks', 'infer,train',
                       '--variants', 'ms-graph,torch', '--repeats', 1, '--warmup', 0, '--quiet-wait', 0,
                       '--out', files / 'bench'], timeout=900))


@pytest.fixture(scope='module')
def commands(tmp_path_factory):
    return started(start_commands, tmp_path_factory)


# --- quick checks, while the commands run ---

def test_recipe_and_presets():
    import train_ascend
    from tnt_common.recipe import RECIPE, applies_weight_decay, recipe
    assert recipe('ptnt')['warmup_epochs'] == 20 and RECIPE['warmup_epochs'] == 5
    args = train_ascend.parse_args(['--data', '/nowhere', '--model', 'ptnt_s_patch16_256'])
    assert (args.preset, args.warmup_epochs, args.img_size) == ('imagenet', 20, 256)
    args = train_ascend.parse_args(['--data', '/nowhere'])
    assert (args.model, args.warmup_epochs) == ('tnt_s_patch16_224', 5)
    assert train_ascend.parse_args(['--model', TINY, '--warmup-epochs', 3]).warmup_epochs == 3
    assert not applies_weight_decay('outer_pos', (1, 64, 32)) and not applies_weight_decay('inner_pos', (1, 16, 4))
    assert applies_weight_decay('stages.0.relative_pos', (1, 2, 64, 4))


def test_drop_path_noise_matches_the_calls():
    """The noise fed per step equals what the DropPath calls of one forward pass take."""
    import mindspore as ms
    import mindspore_tnt
    from mindspore_tnt.tnt import DropPath
    from tnt_train.droppath import values_per_step
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = mindspore_tnt.create_model(TINY, num_classes=10, drop_path_rate=0.1)
    taken = []
    for _, cell in net.cells_and_names():
        if isinstance(cell, DropPath) and cell.drop_prob > 0:
            cell.noise = lambda shape, dtype: taken.append(int(np.prod(shape))) or ms.ops.rand(shape, dtype=dtype)
    net.set_train(True)
    net(ms.Tensor(np.zeros((3, 3, 64, 64), np.float32)))
    # 11 blocks, the first with rate 0; of the other 10, four have the inner transformer (stage 1's
    # first two, stages 2 and 3's first): two outer draws each, two inner ones for those four
    assert sum(taken) == values_per_step(net, 3) and len(taken) == 2 * 10 + 2 * 4


def test_bad_image_size_is_one_line(tmp_path):
    import subprocess
    from parity_tests.helpers import SCRIPT, env
    p = subprocess.run([sys.executable, SCRIPT, '--model', TINY, '--img-size', '72', '--output', str(tmp_path)],
                       capture_output=True, text=True, env=env())
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert '--img-size 72 does not fit ptnt_tiny_patch16_64' in p.stderr


# --- the commands ---

def test_training(commands):
    out = commands['out']
    proc = commands['training'].result()
    assert f'{TINY} (' in proc.stdout
    epochs = rows(out / 'metrics.csv')
    assert len(epochs) == 1 and float(epochs[0]['top1']) > 10. and 'ema_top1' in epochs[0]
    assert 0. <= float(epochs[0]['ema_top1']) <= float(epochs[0]['ema_top5']) <= 100.
    assert (out / 'tnt.mindir').stat().st_size > 1e6
    saved, ema = weights(out / 'model.ckpt'), weights(out / 'model_ema.ckpt')
    stats = [k for k in saved if k.endswith('moving_mean')]
    assert len(stats) == 5
    # the EMA follows the BatchNorm statistics too: none is left at its initial zero mean
    assert all(np.abs(ema[k]).max() > 0 for k in stats)
    # and is its own average: no weight equals the trained one
    assert not any(np.array_equal(ema[k], saved[k]) for k in saved if k.endswith('weight'))


def test_validate_reproduces_the_logged_top1(commands):
    commands['validate'].result()
    result = json.loads((commands['out'] / 'validate.json').read_text())
    logged = rows(commands['out'] / 'metrics.csv')[-1]
    assert (result['model'], result['img_size']) == (TINY, 64)
    assert f"{result['top1']:.4f}" == logged['top1'], (result, logged)


def test_predict_equals_torch(commands, capfd):
    """MindSpore as a command, torch_ref in this process, the same file and photo: the same top 5."""
    from tnt_tools import predict
    files = commands['files']

    def torch_top5(name):
        code, out, err = call(predict.main, [files / name, files / 'china.jpg', '--json', '--framework', 'torch'], capfd)
        assert code == 0, err
        return json.loads(out)['images'][0]['topk']

    ms_run = json.loads(commands['predict'].result().stdout)
    assert (ms_run['model'], ms_run['framework'], ms_run['img_size']) == (TINY, 'mindspore', 64)
    (got,), ref = ms_run['images'], torch_top5('ptnt_tiny.pth')
    assert [p['index'] for p in got['topk']] == [p['index'] for p in ref] and len(ref) == 5
    assert np.allclose([p['probability'] for p in got['topk']], [p['probability'] for p in ref], rtol=1e-5, atol=0)
    # planted fault: other weights, other top 5 (the comparison above can fail)
    assert [p['index'] for p in torch_top5('ptnt_tiny_other.pth')] != [p['index'] for p in got['topk']]


@pytest.mark.parametrize('fmt', ['mindir', 'onnx'])
def test_export(commands, fmt):
    proc = commands[fmt].result()
    assert f'model     {TINY} (1000 classes, 64x64)' in proc.stdout and 'PASS' in proc.stdout
    assert (commands['files'] / f'ptnt_tiny.{fmt}').stat().st_size > 1e6


def test_bench(commands):
    commands['bench'].result()
    result = json.loads((commands['files'] / 'bench.json').read_text())
    got = {(r['task'], r['variant']) for r in result['rows'] if 'error' not in r and r['model'] == TINY}
    assert got == {(t, v) for t in ('infer', 'train') for v in ('ms-graph', 'torch')}
