"""Every TNT family converts with its function preserved: mmpretrain, MindCV, the model zoo,
official, timm's wrappers, Hugging Face hub folders.

Files are built from random weights (``tnt_common.fixtures``) keyed by ``parity_tests.helpers``
from the layout descriptions, saved the way each tool saves them. The source model is
``torch_ref`` holding those weights under the family's numerics (GELU form, LayerNorm
eps); conversions must pass the fp32 bound against it, load strictly, and go back to the
family's own layout bit for bit where that is lossless; ``tnt-convert`` runs as
``convert.cli.main`` in this process (``helpers.convert_cli``), as a command where it refuses.
Planted faults (q and k swapped in mmpretrain's ``in_proj_weight`` split, a real bias replaced
by zeros, tanh GELU run as erf, the final norm's eps) must fail the same comparison. The
mmpretrain files hold TNT-S (legacy): mmpretrain has no other TNT.
"""
import json
import os

import mindspore as ms
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import convert
import torch_ref
from convert import canonical, keymap
from convert.api import read_hub
from convert.transfer import mindspore_to_numpy, numpy_to_torch, torch_to_numpy
from convert.layouts import timm_shapes
from tnt_common.compare import FP32_BOUND, compare_outputs
from tnt_common.fixtures import make_batch
from parity.forward import set_mode
from mindspore_tnt.outputs import mindspore_outputs
from torch_ref.outputs import torch_outputs
from tnt_common.fixtures import random_timm_weights
from parity_tests.helpers import convert_cli, run_cli, tensors
from parity_tests import helpers
from tnt_common.numerics import PRESETS

TINY, LEGACY = 'tnt_tiny_patch16_64', 'tnt_s_legacy_patch16_224'


def save_ckpt(arrays, path, slots=False):
    """A MindSpore ``.ckpt`` as ``ms.save_checkpoint`` writes it; ``slots``: a training file
    (Adam moments, step, learning rate), as the model zoo's and MindCV's trainers save."""
    params = [{'name': k, 'data': ms.Tensor(v)} for k, v in arrays.items()]
    if slots:
        for prefix in ('adam_m.', 'adam_v.'):
            params += [{'name': prefix + k, 'data': ms.Tensor(np.full_like(v, 0.5))} for k, v in arrays.items()]
        params += [{'name': 'global_step', 'data': ms.Tensor([1200], ms.int32)},
                   {'name': 'learning_rate', 'data': ms.Tensor(np.float32(1e-3))},
                   {'name': 'beta1_power', 'data': ms.Tensor(np.float32(0.9))}]
    ms.save_checkpoint(params, str(path), append_dict={'epoch_num': 138, 'step_num': 1200})
    return path


def save_hub_folder(state, path, bin_only=False, name=TINY):
    path.mkdir()
    if bin_only:
        torch.save(tensors(state), path / 'pytorch_model.bin')
    else:
        save_file(tensors(state), str(path / 'model.safetensors'), metadata={'format': 'pt'})
    (path / 'config.json').write_text(json.dumps({
        'architecture': name, 'num_classes': 1000, 'num_features': 96,
        'pretrained_cfg': {'tag': 'in1k', 'mean': [0.5] * 3, 'std': [0.5] * 3}}))
    return path


# family: (variant, numerics preset, weights(state) -> the function's weights, writer(weights, path))
FAMILIES = {
    'mmpretrain.pth': (LEGACY, 'pytorch', None, lambda w, p: torch.save(
        {'meta': {'epoch': 300, 'mmpretrain_version': '1.2.0'},
         'state_dict': tensors(helpers.to_mmpretrain(w))}, p)),
    'mmpretrain_vit_head.pth': (LEGACY, 'pytorch', None, lambda w, p: torch.save(
        {'meta': {}, 'state_dict': tensors({k.replace('head.fc.', 'head.layers.head.'): v
                                            for k, v in helpers.to_mmpretrain(w).items()})}, p)),
    'mindcv.ckpt': (TINY, 'mindcv', None, lambda w, p: save_ckpt(helpers.to_mindcv(w), p)),
    'mindcv_training.ckpt': (TINY, 'mindcv', None, lambda w, p: save_ckpt(helpers.to_mindcv(w), p, slots=True)),
    'zoo.ckpt': (TINY, 'zoo', helpers.zoo_weights, lambda w, p: save_ckpt(helpers.to_zoo(w), p)),
    'zoo_training.ckpt': (TINY, 'zoo', helpers.zoo_weights,
                          lambda w, p: save_ckpt(helpers.to_zoo(w), p, slots=True)),
    'official.pth.tar': (TINY, 'pytorch', None, lambda w, p: torch.save(tensors(helpers.to_official(w)), p)),
    'compiled.pth': (TINY, 'pytorch', None, lambda w, p: torch.save(tensors(w, '_orig_mod.'), p)),
    'ddp_compiled.pth': (TINY, 'pytorch', None, lambda w, p: torch.save(
        {'state_dict': tensors(w, 'module._orig_mod.')}, p)),
    'hub_folder': (TINY, 'pytorch', None, lambda w, p: save_hub_folder(w, p)),
    'hub_folder_bin': (TINY, 'pytorch', None, lambda w, p: save_hub_folder(w, p, bin_only=True)),
}
# The layout each family's files are written back into (None: not a layout of its own).
BACK = {'mmpretrain.pth': 'mmpretrain', 'mindcv.ckpt': 'mindcv', 'zoo.ckpt': 'zoo', 'official.pth.tar': 'official'}
# Other spellings of a family's keys (here mmpretrain.pth's head): reading them is what differs,
# so they are read and compared; the written files and the commands are the family's, tested on it.
READ_ONLY = {'mmpretrain_vit_head.pth'}


def source_model(name, weights, numerics):
    model = torch_ref.create_model(name, weight_init='skip', **PRESETS[numerics].model_kwargs())
    return numpy_to_torch(weights, model)


@pytest.fixture(scope='module')
def sources():
    """{variant: (weights, batch)} and a cache of source outputs by (variant, numerics)."""
    set_mode('pynative')
    cache = {}

    def get(name, numerics, transform=None):
        key = (name, numerics, transform)
        if key not in cache:
            weights = random_timm_weights(timm_shapes(name), seed=3)
            weights = transform(weights) if transform else weights
            x = make_batch(2, 224 if name == LEGACY else 64, seed=1)
            cache[key] = weights, x, torch_outputs(source_model(name, weights, numerics), x)
        return cache[key]
    return get


def assert_parity(test, ref):
    report = compare_outputs(test, ref)
    assert report['passed'], (report['first_failure'], report['logits_rel'])
    return report


def stored_state(path, layout):
    """The stored tensors of a written file, unwrapped as the layout's own code does."""
    path = str(path)
    if path.endswith('.ckpt'):
        return {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items() if isinstance(v, ms.Parameter)}
    obj = torch.load(path, weights_only=True)
    return {k: v.numpy() for k, v in (obj['state_dict'] if layout == 'mmpretrain' else obj).items()}


def assert_same(got, want):
    assert sorted(got) == sorted(want), set(got) ^ set(want)
    for k in want:
        assert got[k].shape == want[k].shape and np.array_equal(got[k], want[k]), k


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_family_converts_with_its_function(family, sources, tmp_path):
    name, numerics, transform, write = FAMILIES[family]
    weights, x, ref = sources(name, numerics, transform)
    src = tmp_path / family
    write(weights, src)

    net = convert.load_torch_into_mindspore(src)  # numerics from the family
    assert net.numerics == PRESETS[numerics]
    assert_parity(mindspore_outputs(net, x), ref)
    assert_same(mindspore_to_numpy(net), weights)
    if family in READ_ONLY:
        return

    out = tmp_path / 'out.ckpt'
    p = convert_cli(src, out, '--to', 'mindspore')
    assert 'PASS' in p.stdout and f'variant   {name}' in p.stdout, p.stdout
    assert f'numerics  {numerics} (' in p.stdout
    params = ms.load_checkpoint(str(out))
    assert json.loads(params[keymap.NUMERICS_KEY]) == PRESETS[numerics].model_kwargs()
    # the written file rebuilds the same function in either framework
    assert_parity(torch_outputs(convert.load_mindspore_into_torch(out), x), ref)

    torch_out = tmp_path / 'out.safetensors'
    convert_cli(src, torch_out, '--to', 'torch', '--no-verify')
    assert_parity(torch_outputs(convert.load_mindspore_into_torch(torch_out), x), ref)

    if family in BACK:  # back into the family's own layout, bit for bit
        back = tmp_path / ('back' + ('.ckpt' if src.suffix == '.ckpt' else '.pth'))
        p = convert_cli(out, back, '--layout', BACK[family])
        assert 'PASS' in p.stdout and f'loaded strictly as {BACK[family]}' in p.stdout
        original = {k: v for k, v in stored_state(src, BACK[family]).items() if k not in ('epoch_num', 'step_num')}
        assert_same(stored_state(back, BACK[family]), original)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [family, 'out.ckpt', 'out.safetensors'] + (['back' + ('.ckpt' if src.suffix == '.ckpt' else '.pth')]
                                                    if family in BACK else []))


def test_report_names_the_family(sources, tmp_path):
    weights, _, _ = sources(TINY, 'zoo', helpers.zoo_weights)
    p = convert_cli(save_ckpt(helpers.to_zoo(weights), tmp_path / 'zoo.ckpt', slots=True), tmp_path / 'z.pth',
                '--no-verify')
    assert 'layout    MindSpore model zoo (research/cv/TNT)' in p.stdout
    assert 'numerics  zoo (GELU tanh, LayerNorm eps 1e-07, final norm eps 1e-07); ' \
           'MindSpore model zoo (research/cv/TNT) default' in p.stdout
    assert 'training-state entries dropped: adam_m.*, adam_v.*, beta1_power, epoch_num' in p.stdout


def test_timm_layout_keeps_other_numerics(sources, tmp_path):
    """MindCV weights written for timm: the .pth wraps its state dict with the numerics."""
    weights, x, ref = sources(TINY, 'mindcv')
    src = save_ckpt(helpers.to_mindcv(weights), tmp_path / 'mindcv.ckpt')
    out = tmp_path / 'mindcv_as_timm.pth'
    convert_cli(src, out)
    obj = torch.load(out, weights_only=True)
    assert json.loads(obj[keymap.NUMERICS_KEY]) == PRESETS['mindcv'].model_kwargs()
    assert_parity(torch_outputs(convert.load_mindspore_into_torch(out), x), ref)
    # timm's own loader would take obj['state_dict']: plain timm names
    assert sorted(obj['state_dict']) == sorted(timm_shapes(TINY))


def test_numerics_override_for_weights_from_pytorch(sources, tmp_path):
    """MindCV's tnt_b_converted file: official PyTorch weights in MindCV's layout. With
    PyTorch's numerics (--numerics pytorch) they compute the function they were trained as."""
    weights, x, ref = sources(TINY, 'pytorch')
    src = save_ckpt(helpers.to_mindcv(weights), tmp_path / 'tnt_converted.ckpt')
    default = convert.load_torch_into_mindspore(src)
    assert not compare_outputs(mindspore_outputs(default, x), ref)['passed']
    assert_parity(mindspore_outputs(convert.load_torch_into_mindspore(src, numerics='pytorch'), x), ref)
    p = convert_cli(src, tmp_path / 'b.safetensors', '--numerics', 'pytorch')
    assert 'numerics  pytorch (GELU erf, LayerNorm eps 1e-05, final norm eps 1e-05); given' in p.stdout
    assert_parity(torch_outputs(convert.load_mindspore_into_torch(tmp_path / 'b.safetensors'), x), ref)


# ---- planted faults: each must fail the comparison the tests above pass ----

def test_planted_qk_swap_in_in_proj_split(sources, tmp_path, monkeypatch):
    weights, x, ref = sources(LEGACY, 'pytorch')
    src = tmp_path / 'mm.pth'
    FAMILIES['mmpretrain.pth'][3](weights, src)
    real = canonical._rows

    def swapped(arrays, src_templates, dst_templates):
        out = real(arrays, src_templates, dst_templates)
        for k in [k for k in out if k.endswith('.qk.weight') and 'in_proj' in src_templates[0][0]]:
            q, kk = np.split(out[k], 2)
            out[k] = np.concatenate([kk, q])
        return out
    monkeypatch.setattr(canonical, '_rows', swapped)
    report = compare_outputs(torch_outputs(convert.load_mindspore_into_torch(src), x), ref)
    assert not report['passed']
    assert (report['first_failure']['stage'], report['first_failure']['stream']) == ('block 0', 'inner')


def test_planted_zero_bias_where_a_real_one_was(sources, tmp_path, monkeypatch):
    weights, x, ref = sources(TINY, 'mindcv')
    src = save_ckpt(helpers.to_mindcv(weights), tmp_path / 'mindcv.ckpt')
    real = canonical._read_layout

    def zeroed(arrays, layout):
        out = real(arrays, layout)
        out['blocks.1.attn_out.proj.bias'] = np.zeros_like(out['blocks.1.attn_out.proj.bias'])
        return out
    monkeypatch.setattr(canonical, '_read_layout', zeroed)
    report = compare_outputs(mindspore_outputs(convert.load_torch_into_mindspore(src), x), ref)
    assert not report['passed']
    assert (report['first_failure']['stage'], report['first_failure']['stream']) == ('block 1', 'outer')


@pytest.mark.parametrize('family', ['mindcv', 'zoo'])
def test_planted_tanh_gelu_run_as_erf(family, sources, tmp_path):
    transform = helpers.zoo_weights if family == 'zoo' else None
    weights, x, ref = sources(TINY, family, transform)
    stored = helpers.to_zoo(weights) if family == 'zoo' else helpers.to_mindcv(weights)
    src = save_ckpt(stored, tmp_path / f'{family}.ckpt')
    wrong = dict(PRESETS[family].model_kwargs(), gelu='erf')
    spec = ','.join(f'{k}={v}' for k, v in wrong.items())
    report = compare_outputs(mindspore_outputs(convert.load_torch_into_mindspore(src, numerics=spec), x), ref)
    assert not report['passed']
    assert (report['first_failure']['stage'], report['first_failure']['stream']) == ('block 0', 'inner')


def test_planted_final_norm_eps(sources, tmp_path):
    """MindCV's final norm runs at eps 1e-7: loaded at 1e-5 it is caught where it matters."""
    weights, x, ref = sources(TINY, 'mindcv', helpers.small_outer_stream)
    src = save_ckpt(helpers.to_mindcv(weights), tmp_path / 'mindcv.ckpt')
    assert_parity(mindspore_outputs(convert.load_torch_into_mindspore(src), x), ref)
    report = compare_outputs(mindspore_outputs(convert.load_torch_into_mindspore(
        src, numerics='gelu=tanh,norm_eps=1e-5,final_norm_eps=1e-5'), x), ref)
    assert not report['passed'] and report['first_failure'] is None  # every block agrees, the logits do not
    assert report['logits_rel'] > FP32_BOUND


def test_hub_folder_config_names_the_variant(sources, tmp_path):
    weights, _, _ = sources(TINY, 'pytorch')
    folder = save_hub_folder(weights, tmp_path / 'hub')
    can, ckpt = read_hub(folder)
    assert ckpt.architecture == TINY and can.variant == TINY and ckpt.path.endswith('model.safetensors')
    config = json.loads((folder / 'config.json').read_text())
    (folder / 'config.json').write_text(json.dumps(dict(config, num_classes=10)))
    with pytest.raises(convert.ConversionError, match='config.json says 10 classes, the head has 1000'):
        read_hub(folder)


def test_mmengine_ema_weights(sources, tmp_path):
    """mmengine's EMAHook swaps the averaged weights into ``state_dict`` before saving and
    keeps the raw ones (``module.``-prefixed, with a step count) in ``ema_state_dict``."""
    weights, _, _ = sources(LEGACY, 'pytorch')
    raw = {k: (v * 0.5).astype(np.float32) for k, v in weights.items()}
    src = tmp_path / 'epoch_300.pth'
    torch.save({'meta': {'epoch': 300}, 'state_dict': tensors(helpers.to_mmpretrain(weights)),
                'ema_state_dict': {'steps': torch.tensor(375300), **tensors(helpers.to_mmpretrain(raw), 'module.')}},
               src)
    assert_same(torch_to_numpy(convert.load_mindspore_into_torch(src)), weights)
    assert_same(torch_to_numpy(convert.load_mindspore_into_torch(src, ema=True)), weights)
    p = convert_cli(src, tmp_path / 'out.ckpt', '--no-verify')
    assert 'note      mmengine file: state_dict holds the EMA weights' in p.stdout


def test_verification_reads_the_numerics_back(sources, tmp_path, monkeypatch):
    """Planted fault: a writer that drops the numerics record. The file would compute PyTorch's
    numerics when loaded later; verification builds its model from what the file records."""
    from convert import files, writers
    weights, _, _ = sources(TINY, 'mindcv')
    src = save_ckpt(helpers.to_mindcv(weights), tmp_path / 'mindcv.ckpt')
    real = writers.write
    monkeypatch.setattr(writers, 'write', lambda *a, **k: real(*a, **dict(k, strings={})))
    with pytest.raises(convert.ConversionError, match='verification failed: the file records numerics pytorch'):
        files.convert_file(src, tmp_path / 'out.safetensors', to='torch')
    assert sorted(os.listdir(tmp_path)) == ['mindcv.ckpt']


def test_hub_folder_weights_are_never_overwritten(sources, tmp_path):
    weights, _, _ = sources(TINY, 'pytorch')
    folder = save_hub_folder(weights, tmp_path / 'hub')
    before = (folder / 'model.safetensors').read_bytes()
    p = run_cli(folder, folder / 'model.safetensors', '--to', 'torch', '--force', check=False)   # the command
    assert p.returncode == 2 and 'is the input file; the input is never overwritten' in p.stderr
    assert (folder / 'model.safetensors').read_bytes() == before
