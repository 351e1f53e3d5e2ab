"""``tnt-export``: MindIR and ONNX graphs that compute the checkpoint's model, or no file at all.

Checkpoints hold random weights (``tnt_common.fixtures``) of ``tnt_tiny_patch16_64``, saved as
timm saves ``model.safetensors`` and as MindCV saves its ``.ckpt`` (tanh GELU, final
norm eps 1e-7). Every written graph is loaded back here the way its users load it
(``GraphCell(ms.load(...))``, ``onnxruntime``) and compared with ``torch_ref`` holding
the same weights under the same numerics.
"""
import os

import mindspore as ms
import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.numpy import save_file

import convert
import mindspore_tnt
import torch_ref
from convert.layouts import timm_shapes
from convert.transfer import mindspore_to_numpy, numpy_to_mindspore, numpy_to_torch
from tnt_common.compare import FP32_BOUND
from tnt_common.fixtures import make_batch
from tnt_common.fixtures import random_timm_weights
from parity_tests import helpers
from tnt_common.compare import rel_err
from tnt_common.numerics import PRESETS
from tnt_tools import export
from tnt_common.cli import EXIT_BAD_INPUT

TINY = 'tnt_tiny_patch16_64'


@pytest.fixture(scope='module')
def weights():
    shapes = timm_shapes(TINY)
    return random_timm_weights(shapes, seed=3)


@pytest.fixture(scope='module')
def timm_file(weights, tmp_path_factory):
    path = tmp_path_factory.mktemp('timm') / 'model.safetensors'
    save_file(weights, str(path), metadata={'format': 'pt'})
    return path


@pytest.fixture(scope='module')
def mindcv_file(weights, tmp_path_factory):
    path = tmp_path_factory.mktemp('mindcv') / 'tnt_tiny_mindcv.ckpt'
    ms.save_checkpoint([{'name': k, 'data': ms.Tensor(v)} for k, v in helpers.to_mindcv(weights).items()],
                       str(path))
    return path


def torch_logits(weights, x, numerics='pytorch'):
    model = numpy_to_torch(weights, torch_ref.create_model(TINY, **PRESETS[numerics].model_kwargs())).eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def graph_logits(path, x):
    if str(path).endswith('.mindir'):
        return ms.nn.GraphCell(ms.load(str(path)))(ms.Tensor(x)).asnumpy()
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def run(capsys, *argv):
    code = export.main([str(a) for a in argv] + ['--device', 'CPU'])
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(directory):
    return sorted(p for p in os.listdir(directory) if '.tmp-' in p)


def assert_matches(test, ref):
    assert test.shape == ref.shape
    assert rel_err(test, ref) <= FP32_BOUND
    assert np.array_equal(test.argmax(-1), ref.argmax(-1))


@pytest.mark.parametrize('name, suffix, extra, shape, batches', [
    ('tiny', '.mindir', [], '(2, 3, 64, 64)', [2]),
    ('', '.onnx', ['--dynamic-batch'], '(batch, 3, 64, 64)', [2, 5]),   # a name that is only the suffix
])
def test_export_round_trips(timm_file, weights, tmp_path, capsys, name, suffix, extra, shape, batches):
    out = tmp_path / 'a folder, 模型' / f'{name}{suffix}'     # a folder name ms.export itself refuses
    out.parent.mkdir()
    out.write_bytes(b'old')
    code, report, err = run(capsys, timm_file, out, '-b', 2, '--force', *extra)
    assert code == 0, err
    assert f'input     float32 {shape}' in report and 'PASS' in report and err == ''
    assert out.is_file() and leftovers(out.parent) == []
    if suffix == '.mindir':   # impl='standard': Conv2D, no custom (AOT) kernel, portable to Ascend
        data = out.read_bytes()
        assert b'Conv2D' in data and b'Custom' not in data
    else:
        assert onnxruntime.InferenceSession(str(out)).get_inputs()[0].shape == ['batch', 3, 64, 64]
    for b in batches:
        x = make_batch(b, 64, seed=7)
        assert_matches(graph_logits(out, x), torch_logits(weights, x))


def test_img_size_resamples(timm_file, tmp_path, capsys):
    out = tmp_path / 'tiny96.onnx'
    assert run(capsys, timm_file, out, '--img-size', 96)[0] == 0
    model = convert.load_mindspore_into_torch(str(timm_file), img_size=96).eval()
    x = make_batch(1, 96, seed=7)
    with torch.no_grad():
        assert_matches(graph_logits(out, x), model(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize('suffix', ['.mindir', '.onnx'])
def test_mindcv_numerics_are_exported(mindcv_file, weights, tmp_path, capsys, suffix):
    out = tmp_path / f'mindcv{suffix}'
    code, report, err = run(capsys, mindcv_file, out, '-b', 2)
    assert code == 0, err
    assert 'numerics  mindcv (GELU tanh, LayerNorm eps 1e-05, final norm eps 1e-07)' in report
    x = make_batch(2, 64, seed=7)
    logits = graph_logits(out, x)
    assert_matches(logits, torch_logits(weights, x, 'mindcv'))
    assert rel_err(logits, torch_logits(weights, x, 'pytorch')) > 10 * FP32_BOUND


def transposed_weight(original):
    def build(source, variant, img_size, fmt):
        model = original(source, variant, img_size, fmt)
        w = model.blocks[1].attn_out.proj.weight
        with torch.no_grad():
            w.copy_(w.t().clone())
        return model
    return build


def erf_gelu(original):
    def build(source, variant, img_size, fmt):
        net = original(source, variant, img_size, fmt)
        wrong = mindspore_tnt.create_model(variant, num_classes=source.num_classes, img_size=img_size,
                                           impl='standard', **{**source.numerics.model_kwargs(), 'gelu': 'erf'})
        numpy_to_mindspore(mindspore_to_numpy(net), wrong).set_train(False)
        return wrong
    return build


@pytest.mark.parametrize('suffix, fault', [('.onnx', transposed_weight), ('.mindir', erf_gelu)])
def test_planted_fault_is_caught(mindcv_file, tmp_path, capsys, monkeypatch, suffix, fault):
    monkeypatch.setattr(export, 'export_model', fault(export.export_model))
    out = tmp_path / f'wrong{suffix}'
    code, report, err = run(capsys, mindcv_file, out)
    assert code == 1
    assert 'FAIL' in report
    assert err.count('\n') == 1 and err.startswith('tnt-export: error: verification failed')
    assert os.listdir(tmp_path) == []


# case: (arguments after the checkpoint, or with the checkpoint replaced; part of the message)
BAD_INPUT = {
    'missing checkpoint': (['absent.safetensors', 'out.onnx'], 'absent.safetensors: no such file'),
    'unknown suffix': (['out.pb'], 'out.pb: unknown format; the suffix must be .mindir or .onnx'),
    'existing output': (['out.onnx'], 'out.onnx: exists; pass --force to overwrite it'),
    'img size 50': (['out.onnx', '--img-size', 50],
                    '.safetensors: --img-size 50 is not a positive multiple of the patch size 16 of'),
    'img size 0': (['out.onnx', '--img-size', 0], '--img-size must be positive, got 0'),
    'batch 0': (['out.onnx', '-b', 0], '--batch-size must be >= 1, got 0'),
    'no output directory': (['absent/out.onnx'], 'absent: no such directory'),
    'bad numerics': (['out.onnx', '--numerics', 'gelu=relu'], "(unknown GELU form 'relu'; choose erf or tanh)"),
}


@pytest.mark.parametrize('case', sorted(BAD_INPUT))
def test_bad_input(timm_file, tmp_path, capsys, case):
    out = tmp_path / 'out.onnx'
    args, message = BAD_INPUT[case]
    argv = [tmp_path / args[0], tmp_path / args[1]] if case == 'missing checkpoint' else \
        [timm_file, tmp_path / args[0], *args[1:]]
    if case == 'existing output':
        out.write_bytes(b'keep me')
    code, report, err = run(capsys, *argv)
    assert code == EXIT_BAD_INPUT
    assert report == '' and err.count('\n') == 1 and err.startswith('tnt-export: error: ') and message in err, err
    assert os.listdir(tmp_path) == (['out.onnx'] if case == 'existing output' else [])
    if case == 'existing output':
        assert out.read_bytes() == b'keep me'
