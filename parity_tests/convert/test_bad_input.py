"""Bad input to ``tnt-convert``: a one-line error, exit code 2, no output, input untouched.

Every case builds a real file in ``tmp_path`` and runs the CLI. Hostile pickles, each in a
folder of its own, are converted by ``tnt-convert`` commands queued at the start of the session
(``start_commands``); they carry a payload that would create a marker file: it must not appear.
"""
import json
import os
import pickle
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import convert
from convert import files, keymap, mindspore_ckpt
from convert.cli import main
from convert.errors import ConversionError
from convert.canonical import from_timm
from parity_tests.helpers import (TINY, Command, assert_refused, random_state, save_mindspore, snapshot, started, tensors,
                                  to_official, zoo_weights)


class Payload:
    """Unpickling this runs ``os.system``: the marker file proves it ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.fixture(scope='module')
def state():
    return random_state()


def save(arrays, path):
    torch.save(tensors(arrays), path)
    return path


def edited(state, drop=(), add=None, change=None):
    out = {k: v for k, v in state.items() if k not in drop}
    out.update(add or {})
    out.update(change or {})
    return out


def write(path, data):
    path.write_bytes(data)
    return path


def truncated(src, path):
    data = src.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def ckpt(arrays, path):
    with open(path, 'wb') as f:
        for k, v in arrays.items():
            mindspore_ckpt.write_tensor(f, k, v, 'fp32')
    return path


def zoo_ckpt(path):
    """Keys of the MindSpore model zoo TNT (separate q/k, ``proj_norm2_tnt``)."""
    arrays = {'cls_token': np.zeros((1, 1, 96), np.float32), 'outer_pos': np.zeros((1, 17, 96), np.float32),
              'inner_pos': np.zeros((1, 16, 6), np.float32), 'proj_norm2_tnt.gamma': np.ones(96, np.float32)}
    for b in ('inner_attn', 'outer_attn'):
        for p in ('q', 'k', 'v', 'proj'):
            arrays[f'blocks.0.{b}.{p}.weight'] = np.zeros((6, 6), np.float32)
    return ckpt(arrays, path)


def hub(folder, arrays, config):
    """A Hugging Face hub folder of ``arrays`` with ``config`` as its config.json."""
    folder.mkdir()
    save_file(tensors(arrays), folder / 'model.safetensors')
    (folder / 'config.json').write_text(json.dumps(config))
    return folder


def resnet(path):
    return save({'conv1.weight': np.zeros((8, 3, 7, 7), np.float32), 'bn1.weight': np.ones(8, np.float32),
                 'layer1.0.conv1.weight': np.zeros((8, 8, 3, 3), np.float32),
                 'fc.weight': np.zeros((10, 8), np.float32)}, path)


# name: (build(tmp_path, state) -> extra CLI args with the input first, expected message part)
CASES = {
    'empty': (lambda t, s: [write(t / 'e.pth', b'')], 'empty file'),
    'text garbage': (lambda t, s: [write(t / 'g.pth', b'hello, not a checkpoint\n' * 50)],
                     'not a checkpoint (unrecognised format'),
    'ckpt-like garbage': (lambda t, s: [write(t / 'g.ckpt', b'\x0a' + np.random.default_rng(0).bytes(4000))],
                          'not a readable MindSpore checkpoint'),
    'directory': (lambda t, s: [(t / 'd').mkdir() or t / 'd'], 'is a directory'),
    'missing': (lambda t, s: [t / 'nope.pth'], 'no such file'),
    'truncated pth': (lambda t, s: [truncated(save(s, t / 'full.pth'), t / 'cut.pth')],
                      'not a readable torch checkpoint (truncated or corrupt'),
    'truncated safetensors': (lambda t, s: [truncated(
        (save_file(tensors(s), t / 'full.safetensors'), t / 'full.safetensors')[1], t / 'cut.safetensors')],
        'not a readable safetensors file (truncated or corrupt'),
    'truncated ckpt': (lambda t, s: [truncated((save_mindspore(s, t / 'full.ckpt'), t / 'full.ckpt')[1],
                                               t / 'cut.ckpt')], 'not a readable MindSpore checkpoint'),
    'resnet': (lambda t, s: [resnet(t / 'resnet50.pth')], 'not a TNT checkpoint: 4 tensors such as bn1.weight'),
    'model zoo TNT, incomplete': (lambda t, s: [zoo_ckpt(t / 'zoo.ckpt')], 'no registered TNT variant has these keys'),
    '2021 MindSpore-hub TNT': (lambda t, s: [ckpt({'encoder.layers.0.attn.q.weight': np.zeros((4, 4), np.float32),
                                                    'pixel2patch.proj.weight': np.zeros((4, 4), np.float32)},
                                                   t / 'tnt_b_pets.ckpt')],
                               'it looks like the 2021 MindSpore-hub TNT (encoder.layers, pixel2patch), a different model'),
    'ViT': (lambda t, s: [save({'cls_token': np.zeros((1, 1, 8), np.float32),
                                'blocks.0.attn.qkv.weight': np.zeros((24, 8), np.float32)}, t / 'vit.pth')],
            'it looks like a ViT-style transformer (blocks.N.attn.qkv), another architecture'),
    'classifier wrapper': (lambda t, s: [save({**{'backbone.' + k: v for k, v in s.items()},
                                               'classifier.weight': np.zeros((3, 96), np.float32)}, t / 'wrapped.pth')],
                           "it looks like a TNT inside a classifier wrapper (TNT weights under 'backbone.' beside "
                           "classifier.*); save the TNT's own state dict"),
    'optimizer only': (lambda t, s: [save({'state.0.exp_avg': np.zeros(3, np.float32)}, t / 'opt.pth')],
                       'it looks like optimizer state, no model weights'),
    'hub folder without weights': (lambda t, s: [(t / 'hub').mkdir() or (t / 'hub' / 'config.json').write_text('{}')
                                                 and t / 'hub'], 'is a directory without model.safetensors or '
                                                                 'pytorch_model.bin'),
    'unknown numerics': (lambda t, s: [save(s, t / 'a.pth'), '--numerics', 'fast'],
                         "numerics 'fast': a preset (pytorch, mindcv, zoo) or gelu=erf|tanh"),
    'unknown numerics key': (lambda t, s: [save(s, t / 'a.pth'), '--numerics', 'gelu=tanh,eps=1e-6'],
                             "gelu=erf|tanh,norm_eps=X,final_norm_eps=Y (unknown key 'eps')"),
    'bad eps': (lambda t, s: [save(s, t / 'a.pth'), '--numerics', 'norm_eps=0'], 'norm_eps must be a number in (0, 1)'),
    'shape mismatch': (lambda t, s: [save(edited(s, change={'blocks.0.mlp.fc1.weight': np.zeros((100, 96), np.float32)}),
                                          t / 'bad.pth')], f'not a {TINY} checkpoint: blocks.0.mlp.fc1.weight has '
                                                           'shape (100, 96), expected (384, 96)'),
    'unexpected key, unnamed': (lambda t, s: [save(edited(s, add={'extra.weight': np.zeros(3, np.float32)}),
                                                   t / 'bad.pth')], f"not a {TINY} checkpoint: missing keys [] (0), "
                                                                    "unexpected keys ['extra.weight'] (1)"),
    'other dims': (lambda t, s: [save(edited(s, change={'cls_token': np.zeros((1, 1, 100), np.float32)}),
                                      t / 'bad.pth')], 'no registered TNT variant has these keys and shapes'),
    'shape mismatch, named': (lambda t, s: [save(edited(s, change={
        'blocks.0.mlp.fc1.weight': np.zeros((100, 96), np.float32)}), t / 'bad.pth'), '--model', TINY],
        'blocks.0.mlp.fc1.weight has shape (100, 96), expected (384, 96)'),
    'missing key': (lambda t, s: [save(edited(s, drop=['blocks.1.norm_in.weight']), t / 'bad.pth'), '--model', TINY],
                    "missing keys ['blocks.1.norm_in.weight'] (1), unexpected keys [] (0)"),
    'unexpected key': (lambda t, s: [save(edited(s, add={'extra.weight': np.zeros(3, np.float32)}), t / 'bad.pth'),
                                     '--model', TINY], "missing keys [] (0), unexpected keys ['extra.weight'] (1)"),
    'other variant named': (lambda t, s: [save(s, t / 'tiny.pth'), '--model', 'tnt_s_patch16_224'],
                            'not a tnt_s_patch16_224 checkpoint: missing keys'),
    'NaN': (lambda t, s: [save(edited(s, change={'blocks.2.proj.weight': np.full((96, 96), np.nan, np.float32)}),
                               t / 'nan.pth')], 'blocks.2.proj.weight holds 9216 NaN/Inf values'),
    'Inf in official layout': (lambda t, s: [save(to_official(edited(s, change={
        'norm.bias': np.full(96, np.inf, np.float32)})), t / 'inf.pth.tar')], 'norm.bias holds 96 NaN/Inf values'),
    'fp16 overflow': (lambda t, s: [save(edited(s, change={'head.bias': np.full(1000, 1e6, np.float32)}),
                                         t / 'big.pth'), '--dtype', 'fp16'], 'head.bias: values up to 1e+06 overflow fp16'),
    'ema absent': (lambda t, s: [save(s, t / 'plain.pth'), '--ema'], '--ema: the file is a plain state dict'),
    'ema absent, MindSpore': (lambda t, s: [(save_mindspore(s, t / 'm.ckpt'), t / 'm.ckpt')[1], '--ema'],
                              '--ema: no EMA weights (ema.*) in the file'),
    'two weight sets': (lambda t, s: [ckpt({**{keymap.TIMM_TO_MINDSPORE.forward(k): v for k, v in s.items()},
                                            **{'model.' + keymap.TIMM_TO_MINDSPORE.forward(k): v for k, v in s.items()}},
                                           t / 'both.ckpt')], "several weight sets, under prefixes ['', 'model.']"),
    'no state dict': (lambda t, s: [(torch.save({'epoch': 3, 'optimizer': {'lr': 0.1}}, t / 'opt.pth'),
                                     t / 'opt.pth')[1]], "no state dict found: top-level keys ['epoch', 'optimizer']"),
    'bad classes': (lambda t, s: [save(s, t / 'a.pth'), '--num-classes', '-3'], '--num-classes must be >= 0'),
    'bad size': (lambda t, s: [save(s, t / 'a.pth'), '--img-size', '100'], 'is not a positive multiple of the patch size 16'),
    'two names for one weight': (lambda t, s: [ckpt({**{keymap.TIMM_TO_MINDSPORE.forward(k): v for k, v in s.items()},
                                                     'norm.weight': np.zeros(96, np.float32)}, t / 'both.ckpt')],
                                 'norm.gamma and norm.weight both map to norm.weight'),
    'rows regrouped onto a stored name': (lambda t, s: [ckpt({**from_timm(zoo_weights(s), 'zoo'),
                                                              'blocks.0.inner_attn.qk.weight': np.ones((12, 6), np.float32)},
                                                             t / 'zoo.ckpt')],
                                          'blocks.0.attn_in.qk.weight is stored beside blocks.0.attn_in.q.weight, '
                                          'blocks.0.attn_in.k.weight, which make it'),
    'integer weight': (lambda t, s: [save(edited(s, change={'cls_token': np.zeros((1, 1, 96), np.int64)}), t / 'int.pth')],
                       'cls_token holds int64 values, not floating-point weights'),
    'fp32 overflow': (lambda t, s: [save(edited(s, change={'head.bias': np.full(1000, 1e300)}), t / 'f64.pth')],
                      'head.bias: values up to 1e+300 overflow fp32'),
    'bf16 overflow': (lambda t, s: [save(edited(s, change={'head.bias': np.full(1000, 3.4e38, np.float32)}),
                                         t / 'big.pth'), '--dtype', 'bf16'], 'head.bias: values up to 3.4e+38 overflow bf16'),
    'ckpt entry of a broken length': (lambda t, s: [ckpt({'cls_token': np.zeros(5, np.uint8)}, t / 'odd.ckpt')],
                                      'Float32 content of a length not a multiple of 4 bytes'),
    'patch_pos of rank 1, named': (lambda t, s: [save(edited(s, change={'patch_pos': np.zeros(17 * 96, np.float32)}),
                                                      t / 'flat.pth'), '--model', TINY],
                                   'patch_pos of shape (1632,): not (1, 1 + a square grid, dim)'),
    'inner_pos not a square of words': (lambda t, s: [save(to_official(edited(s, change={
        'pixel_pos': np.zeros((1, 6, 3, 5), np.float32)})), t / 'words.pth')],
        'inner_pos has shape (1, 15, 6): not a square grid of words'),
    'hub config with a list for architecture': (lambda t, s: [hub(t / 'hub', s, {'architecture': ['tnt']})],
                                                'config.json: architecture ["tnt"] is not a string'),
    'hub config with true for classes': (lambda t, s: [hub(t / 'hub', s, {'num_classes': True})],
                                         'config.json: num_classes true is not an integer'),
    'hub config naming another variant': (lambda t, s: [hub(t / 'hub', s, {'architecture': 'tnt_s_patch16_224'})],
                                          'config.json names tnt_s_patch16_224; not a tnt_s_patch16_224 checkpoint: '
                                          'missing keys'),
}

OUTPUT_CASES = {
    'exists': (['out.ckpt'], 'exists; pass --force to overwrite it'),
    'same as input': (['a.pth', '--force', '--to', 'torch'], 'is the input file'),
    'ckpt for torch': (['out.ckpt', '--to', 'torch'], '.ckpt is a MindSpore format'),
    'pth for mindspore': (['out.pth', '--to', 'mindspore'], 'is a torch format'),
    'unknown suffix': (['out.npz'], 'unknown output type'),
    'upper-case ckpt': (['out.CKPT'], 'out.CKPT: MindSpore loads only names ending in .ckpt (lower case); name it '),
    'upper-case safetensors for mindspore': (['out.SafeTensors', '--to', 'mindspore'],
                                             'MindSpore loads only names ending in .safetensors (lower case)'),
    'negative seed': (['new.ckpt', '--num-classes', '3', '--seed', '-1'], '--seed -1 must not be negative'),
    'missing directory': (['no/such/dir/out.ckpt'], 'does not exist'),
    'official for mindspore': (['out.ckpt', '--layout', 'official'], 'the official layout is a torch layout'),
    'zoo as torch': (['out.pth', '--layout', 'zoo'], 'the zoo layout is a mindspore layout'),
    'zoo with --to torch': (['out.safetensors', '--layout', 'zoo', '--to', 'torch'],
                            'the zoo layout is a mindspore layout: write .ckpt or .safetensors with --to mindspore'),
    'official graph as mmpretrain': (['out.pth', '--layout', 'mmpretrain'],
                                     'tnt_tiny_patch16_64 is the official graph; the mmpretrain (mmengine) layout '
                                     'holds only the legacy one'),
    'pytorch numerics as MindCV': (['m.ckpt', '--layout', 'mindcv'],
                                   'the MindCV code computes mindcv (GELU tanh, LayerNorm eps 1e-05, final norm eps '
                                   '1e-07), these weights are for pytorch (GELU erf'),
    'pytorch numerics as zoo': (['m.ckpt', '--layout', 'zoo'], 'the MindSpore model zoo (research/cv/TNT) code computes'),
    'real biases as zoo': (['m.ckpt', '--layout', 'zoo', '--numerics', 'zoo'],
                           'is not zero (6 of 6 values): the MindSpore model zoo (research/cv/TNT) layout has no '
                           'such bias and would lose it'),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_input(case, state, tmp_path, capsys):
    build, expected = CASES[case]
    args = build(tmp_path, state)
    before = snapshot(tmp_path)
    code = main(['--no-progress', str(args[0]), str(tmp_path / 'out.ckpt'), *map(str, args[1:])])
    assert_refused(code, capsys.readouterr().err, expected, tmp_path, before)
    assert not (tmp_path / 'out.ckpt').exists()


@pytest.mark.parametrize('case', sorted(OUTPUT_CASES))
def test_bad_output(case, state, tmp_path, capsys):
    save(state, tmp_path / 'a.pth')
    (tmp_path / 'out.ckpt').write_bytes(b'keep me')
    args, expected = OUTPUT_CASES[case]
    before = snapshot(tmp_path)
    code = main(['--no-progress', str(tmp_path / 'a.pth'), str(tmp_path / args[0]), *args[1:]])
    assert_refused(code, capsys.readouterr().err, expected, tmp_path, before)


def test_a_numerics_spec_that_is_no_preset_is_refused_plainly():
    from tnt_common.numerics import parse
    with pytest.raises(ValueError) as refused:
        parse('fast')
    assert str(refused.value) == "numerics 'fast': a preset (pytorch, mindcv, zoo) or gelu=erf|tanh,norm_eps=X,final_norm_eps=Y"


def test_a_name_that_is_only_the_suffix_is_written(state, tmp_path, capsys):
    """``.ckpt`` has no extension to Python's splitext: its temporary must still be written as a .ckpt."""
    save(state, tmp_path / 'a.pth')
    assert main(['--no-progress', '--no-verify', str(tmp_path / 'a.pth'), str(tmp_path / '.ckpt')]) == 0, \
        capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ['.ckpt', 'a.pth']
    import mindspore as ms
    assert np.array_equal(ms.load_checkpoint(str(tmp_path / '.ckpt'))['cls_token'].asnumpy(), state['cls_token'])


def hostile_files(folder, marker):
    """The three hostile pickles, each in a new folder (``folder()``)."""
    legacy = folder() / 'legacy_pickle.pth'
    with open(legacy, 'wb') as f:
        pickle.dump({'state_dict': Payload(marker)}, f, protocol=2)
    zipped = folder() / 'zip_pickle.pth.tar'
    torch.save({'state_dict': {'cls_token': torch.zeros(1)}, 'args': Payload(marker)}, zipped)
    as_bin = folder() / 'pytorch_model.bin'
    torch.save(Payload(marker), as_bin)
    return legacy, zipped, as_bin


def start_commands(tmp_path_factory):
    """(the payloads' marker, [(a hostile file, its folder's files, ``tnt-convert``'s run on it)]),
    queued at the start of the session."""
    marker = tmp_path_factory.mktemp('hostile_marker') / 'payload_ran'
    return marker, [(src, snapshot(src.parent), Command([sys.executable, '-m', 'convert.cli', '--no-progress', src,
                                                         src.parent / 'out.ckpt'], timeout=600))
                    for src in hostile_files(lambda: tmp_path_factory.mktemp('hostile'), marker)]


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path_factory):
    marker, runs = started(start_commands, tmp_path_factory)
    for src, before, command in runs:
        p = command.result(check=False)
        assert_refused(p.returncode, p.stderr, 'refused: the pickle calls posix.system', src.parent, before)
        assert not marker.exists(), 'the payload ran'
        with pytest.raises(ValueError, match='refused'):
            convert.load_torch_into_mindspore(src)
        assert not marker.exists(), 'the payload ran'
    # The payload is live: plain unpickling does run it (so the refusal above is meaningful).
    with open(runs[0][0], 'rb') as f:
        pickle.load(f)
    assert marker.exists()


def test_api_raises_value_error_subclass(tmp_path):
    with pytest.raises(ValueError, match='no such file') as info:
        convert.load_torch_into_mindspore(tmp_path / 'missing.pth')
    assert isinstance(info.value, convert.ConversionError) and '\n' not in str(info.value)
    resnet(tmp_path / 'r.pth')
    with pytest.raises(convert.ConversionError, match='not a TNT checkpoint'):
        convert.load_mindspore_into_torch(tmp_path / 'r.pth')


def test_failed_verification_leaves_no_output(state, tmp_path, monkeypatch):
    """A conversion bug that verification catches: transposed square block ``proj`` weight."""
    src = save(state, tmp_path / 'a.pth')
    real = files.from_timm

    def planted(arrays, *args):
        out = dict(arrays)
        out['blocks.1.proj.weight'] = np.ascontiguousarray(out['blocks.1.proj.weight'].T)
        return real(out, *args)

    monkeypatch.setattr(files, 'from_timm', planted)
    before = snapshot(tmp_path)
    with pytest.raises(ConversionError, match='verification failed: 1 tensors differ'):
        files.convert_file(src, tmp_path / 'out.ckpt')
    assert snapshot(tmp_path) == before


def test_interrupted_write_leaves_no_temp_file(state, tmp_path, monkeypatch):
    src = save(state, tmp_path / 'a.pth')
    calls = []

    def failing(f, name, array, dtype_name):
        calls.append(name)
        if len(calls) == 20:
            raise OSError('No space left on device')
        return real(f, name, array, dtype_name)

    real = mindspore_ckpt.write_tensor
    monkeypatch.setattr(mindspore_ckpt, 'write_tensor', failing)
    before = snapshot(tmp_path)
    with pytest.raises(OSError, match='No space left'):
        files.convert_file(src, tmp_path / 'out.ckpt', verify=False)
    assert snapshot(tmp_path) == before and len(calls) == 20


@pytest.fixture(scope='module')
def legacy_file(tmp_path_factory):
    from convert.layouts import timm_shapes
    from tnt_common.fixtures import random_timm_weights
    return save(random_timm_weights(timm_shapes('tnt_s_legacy_patch16_224')),
                tmp_path_factory.mktemp('legacy') / 'tnt_s_legacy.pth')


LEGACY_CASES = {
    'legacy as official': (['out.pth', '--layout', 'official'],
                           'tnt_s_legacy_patch16_224 is the legacy graph; the official Huawei PyTorch layout holds '
                           'only the official one, so its own code would compute another model'),
    'legacy as MindCV': (['out.ckpt', '--layout', 'mindcv', '--numerics', 'mindcv'],
                         'the MindCV layout holds only the official one'),
    'mmpretrain as safetensors': (['out.safetensors', '--layout', 'mmpretrain'],
                                  'the mmpretrain layout is an mmengine .pth file'),
}


@pytest.mark.parametrize('case', sorted(LEGACY_CASES))
def test_impossible_layouts_are_refused_before_writing(case, legacy_file, tmp_path, capsys):
    args, expected = LEGACY_CASES[case]
    before = snapshot(tmp_path)
    code = main(['--no-progress', str(legacy_file), str(tmp_path / args[0]), *args[1:]])
    assert_refused(code, capsys.readouterr().err, expected, tmp_path, before)
