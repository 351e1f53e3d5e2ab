"""Real checkpoint files of every layout and wrapper, converted by the CLI and the API.

Files are built from ``torch_ref`` (and ``mindspore_tnt``) holding random weights
(``tnt_common.fixtures.random_timm_weights``), saved the way each source saves them. The
official layout is written out by ``parity_tests.helpers`` from the layout description,
independently of ``convert.keymap``. Each file is converted to MindSpore through ``tnt-convert``
and through the API, loaded strictly, and must pass the fp32 parity bound against the torch
model; converting back must reproduce every tensor bit for bit. ``tnt-convert`` runs as
``convert.cli.main`` in this process (``helpers.convert_cli``); the real-size TNT-S
conversion runs it as a command, as a user does, queued beside the tests (``helpers.Command``).
"""
import argparse
import json
import os
import sys

import mindspore as ms
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import convert
import mindspore_tnt
import torch_ref
from convert import keymap
from convert.transfer import mindspore_to_numpy, numpy_to_mindspore, numpy_to_torch, torch_to_numpy
from tnt_common.compare import FP32_BOUND, compare_outputs, describe_failure
from tnt_common.fixtures import make_batch
from parity.forward import set_mode
from mindspore_tnt.outputs import mindspore_outputs
from torch_ref.outputs import torch_outputs
from parity_tests.helpers import (TINY, Command, convert_cli, random_state, save_mindspore, started, tensors,
                                  to_official)
from tnt_common.numerics import PYTORCH


def torch_model(arrays, name=TINY):
    return numpy_to_torch(arrays, torch_ref.create_model(name, weight_init='skip'))


def mindspore_net(arrays, name=TINY):
    return numpy_to_mindspore(arrays, mindspore_tnt.create_model(name, weight_init='skip'))


# Every source file: (file name, writer(state, path), stored layout for the way back).
def _torch_writer(wrap):
    return lambda state, path: torch.save(wrap(state), path)


SOURCES = {
    'timm.pth': (_torch_writer(lambda s: tensors(s)), 'timm'),
    'timm.bin': (_torch_writer(lambda s: tensors(s)), 'timm'),
    'timm.safetensors': (lambda s, p: save_file(tensors(s), str(p), metadata={'format': 'pt'}), 'timm'),
    'official.pth.tar': (_torch_writer(lambda s: tensors(to_official(s))), 'official'),
    'official_pre_zip_format.pth.tar': (lambda s, p: torch.save(
        tensors(to_official(s)), p, _use_new_zipfile_serialization=False), 'official'),
    'wrapped_state_dict.pth.tar': (_torch_writer(lambda s: {
        'state_dict': tensors(s, 'module.'), 'epoch': 7, 'arch': TINY,
        'args': argparse.Namespace(lr=1e-3, model=TINY)}), 'timm'),
    'wrapped_model.pth': (_torch_writer(lambda s: {'model': tensors(s)}), 'timm'),
    'mindspore.ckpt': (lambda s, p: save_mindspore(s, p), 'mindspore'),
    'mindspore_prefixed.ckpt': (lambda s, p: save_mindspore(s, p, prefix=True), 'mindspore'),
    'mindspore.safetensors': (lambda s, p: save_mindspore(s, p, fmt='safetensors'), 'mindspore'),
}


def load_ckpt_strict(path, name=TINY, **kwargs):
    """MindSpore's own loader, strict: every parameter loaded, nothing left over (half
    precision files are cast to the model's fp32 first, as strict loading requires; the
    numerics string entry of a ``.ckpt`` is not a parameter)."""
    net = mindspore_tnt.create_model(name, weight_init='skip', **kwargs)
    fmt = 'safetensors' if str(path).endswith('.safetensors') else 'ckpt'
    loaded = ms.load_checkpoint(str(path), format=fmt)
    if fmt == 'ckpt':
        assert json.loads(loaded.pop(keymap.NUMERICS_KEY)) == net.numerics.model_kwargs()
    params = {k: ms.Parameter(v.astype(ms.float32), name=k) for k, v in loaded.items()}
    not_loaded, unused = ms.load_param_into_net(net, params, strict_load=True)
    assert not not_loaded and not unused, (not_loaded, unused)
    return net


@pytest.fixture(scope='module')
def reference():
    set_mode('pynative')
    state = random_state()
    x = make_batch(2, 64, seed=0)
    return state, x, torch_outputs(torch_model(state), x)


def assert_parity(net, reference):
    _, x, ref = reference
    report = compare_outputs(mindspore_outputs(net, x), ref)
    assert report['passed'], describe_failure(report)


def assert_same_tensors(got, want):
    assert sorted(got) == sorted(want)
    for k in want:
        a, b = np.asarray(got[k]), np.asarray(want[k])
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), k


@pytest.mark.parametrize('source', sorted(SOURCES))
def test_cli_and_api_convert_every_layout(source, reference, tmp_path):
    state = reference[0]
    writer, stored_layout = SOURCES[source]
    src = tmp_path / source
    writer(state, src)
    before = src.read_bytes()

    api_net = convert.load_torch_into_mindspore(src)
    assert_parity(api_net, reference)
    assert_same_tensors(mindspore_to_numpy(api_net), state)

    out = tmp_path / 'out.ckpt'
    p = convert_cli(src, out, '--to', 'mindspore')
    assert 'PASS' in p.stdout and f'variant   {TINY}' in p.stdout
    assert_parity(load_ckpt_strict(out), reference)

    # The way back, into the source's own layout and container: bit-exact.
    back = tmp_path / ('back' + ''.join(src.suffixes))
    if stored_layout == 'mindspore':
        convert_cli(out, back, '--to', 'mindspore', '--no-verify')
        assert_same_tensors(mindspore_to_numpy(load_ckpt_strict(back)), state)
        torch_back = convert.load_mindspore_into_torch(back)
    else:
        convert_cli(out, back, '--to', 'torch', '--layout', stored_layout, '--no-verify')
        want = to_official(state) if stored_layout == 'official' else state
        got = load_file(back) if source.endswith('.safetensors') else torch.load(back, weights_only=True)
        assert_same_tensors({k: v.numpy() for k, v in got.items()}, want)
        torch_back = convert.load_mindspore_into_torch(back)
    assert_same_tensors(torch_to_numpy(torch_back), state)
    assert src.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == sorted([source, 'out.ckpt', back.name])


def test_mindspore_reads_report_what_was_unwrapped(reference, tmp_path):
    save_mindspore(reference[0], tmp_path / 'm.ckpt', prefix=True)
    p = convert_cli(tmp_path / 'm.ckpt', tmp_path / 'm.pth', '--no-verify')
    assert "prefix 'model.' removed" in p.stdout
    assert '2 training-state entries dropped' in p.stdout
    assert 'layout    mindspore_tnt (MindSpore names)' in p.stdout


def test_mindspore_training_checkpoint(reference, tmp_path):
    """Weights, EMA weights, AdamW slots, counters and metadata in one flat .ckpt file."""
    state, ema = reference[0], random_state(seed=1)
    params = []
    for prefix, arrays in (('', state), ('ema.', ema), ('exp_avg.', ema), ('exp_avg_sq.', state)):
        params += [{'name': prefix + keymap.TIMM_TO_MINDSPORE.forward(k), 'data': ms.Tensor(v)}
                   for k, v in arrays.items()]
    params += [{'name': 'lr_schedule.step', 'data': ms.Tensor(7, ms.int32)},
               {'name': 'loss_scale.value', 'data': ms.Tensor(2. ** 16, ms.float32)}]
    src = tmp_path / 'step000700.ckpt'
    ms.save_checkpoint(params, str(src), append_dict={'meta': '{"epoch": 3}'}, crc_check=True)
    p = convert_cli(src, tmp_path / 'weights.pth', '--no-verify')
    assert 'EMA weights also present' in p.stdout
    assert (f'{3 * len(state) + 3} training-state entries dropped: ema.*, exp_avg.*, exp_avg_sq.*, '
            'loss_scale.value, lr_schedule.step, meta') in p.stdout
    assert_same_tensors({k: v.numpy() for k, v in torch.load(tmp_path / 'weights.pth').items()}, state)
    p = convert_cli(src, tmp_path / 'ema.pth', '--ema', '--no-verify')
    assert (f'{3 * len(state) + 3} training-state entries dropped: exp_avg.*, exp_avg_sq.*, the weights (not the '
            'EMA), loss_scale.value, lr_schedule.step, meta') in p.stdout
    assert_same_tensors({k: v.numpy() for k, v in torch.load(tmp_path / 'ema.pth').items()}, ema)
    assert_same_tensors(mindspore_to_numpy(convert.load_torch_into_mindspore(src, ema=True)), ema)


def test_ema_is_chosen_on_request(reference, tmp_path):
    state, ema = reference[0], random_state(seed=1)
    src = tmp_path / 'train.pth.tar'
    torch.save({'state_dict': tensors(state, 'module.'), 'state_dict_ema': tensors(ema)}, src)
    assert_same_tensors(mindspore_to_numpy(convert.load_torch_into_mindspore(src)), state)
    assert_same_tensors(mindspore_to_numpy(convert.load_torch_into_mindspore(src, ema=True)), ema)
    p = convert_cli(src, tmp_path / 'ema.ckpt', '--ema', '--no-verify')
    assert "wrapper key 'state_dict_ema'" in p.stdout
    assert_same_tensors(mindspore_to_numpy(load_ckpt_strict(tmp_path / 'ema.ckpt')), ema)
    p = convert_cli(src, tmp_path / 'plain.ckpt', '--no-verify')
    assert 'EMA weights also present' in p.stdout


def test_num_classes_and_img_size(reference, tmp_path):
    state = reference[0]
    src = tmp_path / 'timm.pth'
    torch.save(tensors(state), src)
    net = convert.load_torch_into_mindspore(src, num_classes=10, img_size=96)
    got = mindspore_to_numpy(net)
    assert got['head.weight'].shape == (10, 96) and not got['head.bias'].any()
    assert 0.015 < got['head.weight'].std() < 0.025  # the model's own init: trunc-normal 0.02
    assert got['patch_pos'].shape == (1, 37, 96)
    np.testing.assert_array_equal(got['patch_pos'][:, 0], state['patch_pos'][:, 0])
    for k in state:
        if not k.startswith('head.') and k != 'patch_pos':
            np.testing.assert_array_equal(got[k], state[k], err_msg=k)
    headless = convert.load_torch_into_mindspore(src, num_classes=0)
    assert not any(k.startswith('head') for k in mindspore_to_numpy(headless))

    out = tmp_path / 'c10.ckpt'
    p = convert_cli(src, out, '--num-classes', '10', '--img-size', '96')
    assert 'PASS' in p.stdout and 'head 1000 -> 10 classes' in p.stdout
    net = load_ckpt_strict(out, num_classes=10, img_size=96)
    np.testing.assert_array_equal(mindspore_to_numpy(net)['patch_pos'], got['patch_pos'])


@pytest.mark.parametrize('dtype', ['fp16', 'bf16'])
def test_half_precision_outputs(dtype, reference, tmp_path):
    state = reference[0]
    src = tmp_path / 'timm.pth'
    torch.save(tensors(state), src)
    torch_dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}[dtype]
    want = {k: torch.from_numpy(v).to(torch_dtype) for k, v in state.items()}  # torch's rounding
    out = tmp_path / 'half.ckpt'
    p = convert_cli(src, out, '--dtype', dtype)
    assert 'PASS' in p.stdout and f'rounded to {dtype}' in p.stdout
    params = ms.load_checkpoint(str(out))
    assert isinstance(params.pop(keymap.NUMERICS_KEY), str)
    assert {str(v.dtype) for v in params.values()} == {
        {'fp16': 'Float16', 'bf16': 'BFloat16'}[dtype]}
    for k, v in mindspore_to_numpy(load_ckpt_strict(out)).items():  # as loaded, fp32
        np.testing.assert_array_equal(v, want[k].float().numpy(), err_msg=k)
    tout = tmp_path / 'half.safetensors'
    convert_cli(out, tout, '--dtype', dtype, '--no-verify')
    for k, v in load_file(tout).items():
        assert v.dtype == torch_dtype and torch.equal(v, want[k]), k


LEGACY = 'tnt_s_legacy_patch16_224'


def start_commands(tmp_path_factory):
    """``tnt-convert`` of a TNT-S (legacy graph) file, queued (``helpers.Command``): (folder, command)."""
    folder = tmp_path_factory.mktemp('tnt_s_legacy')
    torch.save(tensors(random_state(LEGACY)), folder / 'tnt_s_legacy.pth')
    return folder, Command([sys.executable, '-m', 'convert.cli', '--no-progress', folder / 'tnt_s_legacy.pth',
                            folder / 'tnt_s_legacy.ckpt'])


def test_tnt_s_legacy_conversion(tmp_path_factory):
    """One real-size conversion: TNT-S (legacy graph), torch -> MindSpore -> torch."""
    name = LEGACY
    folder, command = started(start_commands, tmp_path_factory)
    p, out = command.result(), folder / 'tnt_s_legacy.ckpt'      # the command itself
    state = {k: v.numpy() for k, v in torch.load(folder / 'tnt_s_legacy.pth', weights_only=True).items()}
    assert 'layout    timm, legacy graph' in p.stdout and f'variant   {name}' in p.stdout
    assert 'PASS' in p.stdout and '23,755,336 parameters' in p.stdout
    assert_same_tensors(mindspore_to_numpy(load_ckpt_strict(out, name)), state)
    convert_cli(out, folder / 'back.safetensors', '--no-verify')
    assert_same_tensors({k: v.numpy() for k, v in load_file(folder / 'back.safetensors').items()}, state)


def test_parity_catches_a_wrong_inner_pos_transform(reference, tmp_path):
    """Planted fault: ``inner_pos`` reshaped without the transpose (same shape, wrong order)."""
    state = reference[0]
    src = tmp_path / 'official_bad.pth.tar'
    torch.save(tensors(to_official(state, inner_pos=lambda p: p.reshape(1, 16, -1))), src)
    net = convert.load_torch_into_mindspore(src)
    _, x, ref = reference
    report = compare_outputs(mindspore_outputs(net, x), ref)
    assert not report['passed']
    assert (report['first_failure']['stage'], report['first_failure']['stream']) == ('embed', 'inner')


def test_verification_catches_a_transposed_weight(reference, tmp_path):
    """Planted fault on the source side of the comparison: the square block proj transposed."""
    from convert.verify import verify
    state = reference[0]
    out = tmp_path / 'good.ckpt'
    torch.save(tensors(state), tmp_path / 'a.pth')
    convert_cli(tmp_path / 'a.pth', out, '--no-verify')
    good = verify(str(out), state, 'torch', 'mindspore', 'mindspore', TINY, 1000, 64, PYTORCH)
    assert good['passed'], good.get('verdict', describe_failure(good))
    bad_state = dict(state, **{'blocks.1.proj.weight': np.ascontiguousarray(state['blocks.1.proj.weight'].T)})
    bad = verify(str(out), bad_state, 'torch', 'mindspore', 'mindspore', TINY, 1000, 64, PYTORCH)
    assert not bad['passed'] and bad['exact_mismatch'] == ['blocks.1.proj.weight']
    assert (bad['first_failure']['stage'], bad['first_failure']['stream']) == ('block 1', 'outer')
    assert bad['logits_rel'] > FP32_BOUND


def test_bit_exact_check_sees_one_ulp(reference):
    state = reference[0]
    nudged = dict(state, **{'norm.bias': np.nextafter(state['norm.bias'], np.float32(np.inf))})
    with pytest.raises(AssertionError, match='norm.bias'):
        assert_same_tensors(nudged, state)
