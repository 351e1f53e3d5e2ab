"""Training files load without running their code; hostile pickles are refused and run nothing.

mmengine and a project's own classes are stood in for by local classes whose ``__module__``
is set to the real one; a fake module is registered only while pickling, so loading can
never import them. Every hostile payload is live: plain unpickling runs it (the marker file
appears), the converter refuses it with one line and the marker never appears.
"""
import argparse
import collections
import contextlib
import copyreg
import datetime
import importlib.util
import io
import os
import pathlib
import pickle
import pickletools
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest
import torch

from convert import readers, safe_pickle
from convert.errors import ConversionError
from parity_tests.helpers import Command, started
from tnt_common.cli import EXIT_BAD_INPUT

MMENGINE = ('mmengine', 'mmengine.logging', 'mmengine.logging.history_buffer', 'mmengine.config',
            'mmengine.config.config')


class HistoryBuffer:
    """The shape of mmengine's ``HistoryBuffer``: numpy arrays in its ``__dict__``."""

    def __init__(self, log_history, count_history, max_length=1000000):
        self.max_length = max_length
        self._log_history = np.asarray(log_history, np.float64)
        self._count_history = np.asarray(count_history, np.float64)


class ConfigDict(dict):
    """A dict subclass, as mmengine's ``ConfigDict``."""


class Config:
    """A project's own class whose constructor and ``__setstate__`` would leave a marker file."""

    def __init__(self, marker):
        open(marker, 'w').close()
        self.marker = marker

    def __setstate__(self, state):
        open(state['marker'], 'w').close()

    def __reduce__(self):
        return Config, (self.marker,), {'marker': self.marker}


class Recorder(list):
    """Reduces to (class, args, state, list items, dict items): every hook a placeholder must absorb."""

    def __reduce__(self):
        return Recorder, ('a', 2), {'x': 1}, iter([1, 2, 3]), iter({'k': 'v'}.items())


HistoryBuffer.__module__ = 'mmengine.logging.history_buffer'
ConfigDict.__module__ = 'mmengine.config.config'
Config.__module__ = Recorder.__module__ = 'myproject.config'


@contextlib.contextmanager
def importable(*classes):
    """Register fake modules holding ``classes`` (as pickling needs them), then remove every one."""
    added = []
    for cls in classes:
        parts = cls.__module__.split('.')
        for i in range(1, len(parts) + 1):
            name = '.'.join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        setattr(sys.modules[cls.__module__], cls.__qualname__, cls)
    try:
        yield
    finally:
        for name in added:
            del sys.modules[name]


class Reduce:
    """Unpickling this calls ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def small_weights():
    return {'layer.weight': torch.randn(4, 3), 'layer.bias': torch.zeros(4)}


def optimizer_state(weights):
    params = [torch.nn.Parameter(v.clone()) for v in weights.values()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    sum(p.sum() for p in params).backward()
    opt.step()
    return opt.state_dict()


def mmengine_checkpoint(weights, hub_extra=None):
    """What mmengine's ``Runner.save_checkpoint`` writes (``epoch_300.pth``)."""
    return {
        'meta': {'epoch': 300, 'iter': 375300, 'mmengine_version': '0.10.4', 'seed': 0,
                 'time': '20240611_101010', 'experiment_name': 'tnt_s_16xb64_in1k_20240610_000000',
                 'dataset_meta': {'classes': ('tench', 'goldfish')}},
        'state_dict': collections.OrderedDict(weights),
        'message_hub': {
            'log_scalars': collections.OrderedDict([
                ('train/loss', HistoryBuffer([2.5, 2.25], [1, 1])),
                ('train/lr', HistoryBuffer([1e-3, 9e-4], [1, 1])),
                ('val/accuracy/top1', HistoryBuffer([], []))]),
            'runtime_info': collections.OrderedDict(
                epoch=300, iter=375300, max_epochs=300, cfg=ConfigDict(model={'type': 'TNT'}),
                dataset_meta={'classes': ('tench', 'goldfish')}, **(hub_extra or {})),
            'resumed_keys': collections.OrderedDict(epoch=True, iter=True, max_epochs=True)},
        'optimizer': optimizer_state(weights),
        'param_schedulers': [{'start_factor': 0.001, 'end_factor': 1.0, 'begin': 0, 'end': 20, 'by_epoch': True,
                              'last_step': 300, 'verbose': False, '_get_value_called_within_step': False,
                              'base_values': [0.001], '_last_value': [0.0005]}],
    }


def save_mmengine(path, weights, legacy=False, hub_extra=None):
    with importable(HistoryBuffer, ConfigDict, Config):
        torch.save(mmengine_checkpoint(weights, hub_extra), path, _use_new_zipfile_serialization=not legacy)
    return path


def timm_checkpoint(weights):
    """What timm's ``train.py`` (``CheckpointSaver``) writes."""
    return {'epoch': 299, 'arch': 'tnt_s_patch16_224', 'state_dict': collections.OrderedDict(weights),
            'optimizer': optimizer_state(weights), 'version': 2,
            'args': argparse.Namespace(model='tnt_s_patch16_224', lr=1e-3, epochs=300, smoothing=0.1,
                                       mean=None, input_size=[3, 224, 224], data_dir='/data/imagenet'),
            'metric': 81.52, 'state_dict_ema': collections.OrderedDict((k, v + 1) for k, v in weights.items())}


def assert_same_tensors(got, expected):
    assert list(got) == list(expected)
    for k in expected:
        assert got[k].dtype == expected[k].dtype and torch.equal(got[k], expected[k]), k


def test_no_real_mmengine():
    """The stand-ins are the only mmengine/myproject there is: loading cannot import them."""
    assert importlib.util.find_spec('mmengine') is None and importlib.util.find_spec('myproject') is None


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_mmengine_training_file_loads(legacy, tmp_path):
    weights = small_weights()
    path = save_mmengine(tmp_path / 'epoch_300.pth', weights, legacy)
    assert not set(MMENGINE) & set(sys.modules)
    ckpt = safe_pickle.load_torch(path)
    assert not set(MMENGINE) & set(sys.modules), 'loading imported mmengine'
    assert_same_tensors(ckpt['state_dict'], weights)
    assert ckpt['meta'] == mmengine_checkpoint(weights)['meta']
    loss = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, safe_pickle.Placeholder) and type(loss).__name__ == 'HistoryBuffer'
    assert (loss.module, loss.name) == ('mmengine.logging.history_buffer', 'HistoryBuffer')
    np.testing.assert_array_equal(loss.state['_log_history'], [2.5, 2.25])
    assert ckpt['message_hub']['log_scalars']['val/accuracy/top1'].state['_count_history'].shape == (0,)
    cfg = ckpt['message_hub']['runtime_info']['cfg']
    assert cfg.name == 'ConfigDict' and cfg.dictitems == {'model': {'type': 'TNT'}}
    assert ckpt['optimizer']['param_groups'][0]['lr'] == 1e-3
    assert set(ckpt['optimizer']['state'][0]) == {'step', 'exp_avg', 'exp_avg_sq'}
    assert ckpt['param_schedulers'][0]['last_step'] == 300


def test_timm_training_file_loads(tmp_path):
    weights = small_weights()
    torch.save(timm_checkpoint(weights), tmp_path / 'model_best.pth.tar')
    ckpt = safe_pickle.load_torch(tmp_path / 'model_best.pth.tar')
    assert type(ckpt['args']) is argparse.Namespace and ckpt['args'].input_size == [3, 224, 224]
    assert_same_tensors(ckpt['state_dict'], weights)
    assert torch.equal(ckpt['state_dict_ema']['layer.bias'], torch.ones(4))
    assert (ckpt['epoch'], ckpt['arch'], ckpt['version'], ckpt['metric']) == (299, 'tnt_s_patch16_224', 2, 81.52)


@pytest.mark.parametrize('legacy, protocol', [(False, 2), (True, 2), (False, 5)], ids=['zip', 'legacy', 'protocol 5'])
def test_plain_data_loads_as_itself(legacy, protocol, tmp_path):
    plain = {'ints': [1, -2, 2 ** 70], 'floats': (0.5, float('inf')), 'complex': 1 + 2j, 'bytes': [b'', b'\x00\xff'],
             'bytearray': bytearray(b'ab'), 'set': {1, 2}, 'frozenset': frozenset('ab'), 'slice': slice(1, 9, 2),
             'range': range(3), 'none': None, 'counter': collections.Counter('aab'),
             'defaultdict': collections.defaultdict(list, a=[1]), 'simple': types.SimpleNamespace(a=1),
             'when': datetime.datetime(2024, 6, 11, 10, 10, tzinfo=datetime.timezone.utc),
             'took': datetime.timedelta(hours=3), 'day': datetime.date(2024, 6, 11), 'at': datetime.time(10, 10),
             'paths': [pathlib.PosixPath('/runs/tnt'), pathlib.PureWindowsPath('C:/runs')],
             'numpy': [np.arange(6, dtype=np.int16).reshape(2, 3), np.zeros(0), np.float32(1.5), np.int64(7)],
             'numpy types': [np.float32, np.dtype('<f8'), np.dtype([('a', 'i4'), ('b', 'f2')])],
             'torch': [torch.float16, torch.device('cpu'), torch.Size([2, 3]), torch.__version__]}
    path = tmp_path / 'plain.pth'
    torch.save(plain, path, _use_new_zipfile_serialization=not legacy, pickle_protocol=protocol)
    got = safe_pickle.load_torch(path)
    numpy, expected_numpy = got.pop('numpy'), plain.pop('numpy')
    assert got == plain
    for a, b in zip(numpy, expected_numpy):
        assert type(a) is type(b) and a.dtype == b.dtype and np.array_equal(a, b)


def test_mmpretrain_training_file_converts_end_to_end(tmp_path):
    """An mmengine ``epoch_N.pth`` of mmpretrain's TNT-S: read, recognised, loaded strictly."""
    import convert
    from convert.api import read_hub
    from convert.layouts import timm_shapes
    from convert.transfer import torch_to_numpy
    from tnt_common.fixtures import random_timm_weights
    from parity_tests.helpers import to_mmpretrain
    name = 'tnt_s_legacy_patch16_224'
    weights = random_timm_weights(timm_shapes(name))
    path = save_mmengine(tmp_path / 'epoch_300.pth', {k: torch.from_numpy(v) for k, v in to_mmpretrain(weights).items()})
    ckpt = readers.read(path)
    assert "weights taken from wrapper key 'state_dict'" in ckpt.notes
    can, _ = read_hub(path)
    assert (can.layout, can.variant) == ('mmpretrain', name)
    got = torch_to_numpy(convert.load_mindspore_into_torch(path))
    assert sorted(got) == sorted(weights)
    for k, v in weights.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_every_global_reaches_find_class(tmp_path, monkeypatch):
    """torch.load hands every global of the pickle to our find_class, except storage type names,
    which torch resolves itself to inert ``StorageType`` records."""
    seen = []
    find_class = safe_pickle.Unpickler.find_class
    monkeypatch.setattr(safe_pickle.Unpickler, 'find_class',
                        lambda self, module, name: seen.append(f'{module}.{name}') or find_class(self, module, name))
    for legacy in (False, True):
        seen.clear()
        path = save_mmengine(tmp_path / f'{legacy}.pth', small_weights(), legacy)
        if legacy:
            with open(path, 'rb') as f:
                for _ in range(3):  # magic number, protocol, sys info: plain data
                    pickle.load(f)
                ops = list(pickletools.genops(f))
        else:
            with zipfile.ZipFile(path) as z:
                ops = list(pickletools.genops(z.read(next(n for n in z.namelist() if n.endswith('/data.pkl')))))
        named = {arg.replace(' ', '.') for op, arg, _ in ops if op.name == 'GLOBAL'}
        safe_pickle.load_torch(path)
        assert {g for g in named if 'Storage' not in g} == set(seen), legacy
        assert {'mmengine.logging.history_buffer.HistoryBuffer', 'numpy.core.multiarray._reconstruct',
                'torch._utils._rebuild_tensor_v2', 'collections.OrderedDict'} <= set(seen)


def test_placeholders_only_store():
    with importable(Recorder):
        data = pickle.dumps(Recorder(), protocol=2)
    obj = safe_pickle.load(io.BytesIO(data))
    assert isinstance(obj, safe_pickle.Placeholder) and not isinstance(obj, list)
    assert (obj.module, obj.name, obj.args, obj.state) == ('myproject.config', 'Recorder', ('a', 2), {'x': 1})
    assert (obj.listitems, obj.dictitems) == ([1, 2, 3], {'k': 'v'})


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_placeholder_never_runs_the_class(legacy, tmp_path):
    marker = str(tmp_path / 'config_ran')
    with importable(Config):
        config = Config(marker)
        os.remove(marker)
        data = pickle.dumps(config, protocol=2)
        pickle.loads(data)  # the real class does leave the marker
        assert os.path.exists(marker)
        os.remove(marker)
        torch.save({'state_dict': small_weights(), 'cfg': config}, tmp_path / 'c.pth',
                   _use_new_zipfile_serialization=not legacy)
    ckpt = safe_pickle.load_torch(tmp_path / 'c.pth')
    cfg = ckpt['cfg']
    assert (cfg.name, cfg.args, cfg.state) == ('Config', (marker,), {'marker': marker})
    assert not os.path.exists(marker), 'the class ran'


def touch(marker):
    return f'touch {marker}'


# name: (payload(marker) -> object to pickle, or raw pickle bytes; global named in the refusal)
PAYLOADS = {
    'os.system': (lambda m: Reduce(os.system, touch(m)), 'posix.system'),
    'exec': (lambda m: Reduce(exec, f'open({str(m)!r}, "w").close()'), 'builtins.exec'),
    'subprocess': (lambda m: Reduce(subprocess.call, ['touch', str(m)]), 'subprocess.call'),
    'getattr(__import__)': (lambda m: b'\x80\x02cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V'
                            + touch(m).encode() + b'\ntR.', 'builtins.getattr'),
    'nested torch.load': (lambda m: Reduce(torch.storage._load_from_bytes, zip_bytes(Reduce(os.system, touch(m)))),
                          'torch.storage._load_from_bytes'),
    'numpy runstring': (lambda m: Reduce(np.testing._private.utils.runstring,
                                         f'open({str(m)!r}, "w").close()', {}), 'numpy.testing._private.utils.runstring'),
    'in placeholder state': (lambda m: Placed(Reduce(os.system, touch(m))), 'posix.system'),
}
RAW_PAYLOADS = ('getattr(__import__)',)  # pickle bytes: a whole file, not an object to embed


class Placed:
    """A third-party object (a placeholder when loaded) whose state hides ``payload``."""

    def __init__(self, payload):
        self.payload = payload


Placed.__module__ = 'myproject.config'


def zip_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def hostile_file(kind, where, marker, tmp_path):
    """A torch file with the payload at the top level or inside an otherwise valid mmengine file."""
    make, _ = PAYLOADS[kind]
    payload = make(marker)
    path = tmp_path / f'{where}.pth'
    if isinstance(payload, bytes):
        path.write_bytes(payload)
        with open(path, 'rb') as f:
            pickle.load(f)  # live: plain unpickling runs it
    else:
        with importable(Placed, HistoryBuffer, ConfigDict, Config):
            pickle.loads(pickle.dumps(payload, protocol=2))  # live: plain unpickling runs it
            if where == 'top':
                torch.save(payload, path)
            else:
                save_mmengine(path, small_weights(), legacy=where == 'legacy hub', hub_extra={'hook': payload})
    assert marker.exists(), 'the payload is not live'
    os.remove(marker)
    return path


def assert_one_line_refusal(message, path, named):
    assert '\n' not in message, message
    assert message.startswith(f'{path}: refused: the pickle '), message
    assert named in message and 'weights_only=False' in message, message


@pytest.mark.parametrize('kind, where', [(k, w) for k in sorted(PAYLOADS) for w in ('top', 'mmengine hub', 'legacy hub')
                                         if k not in RAW_PAYLOADS or w == 'top'])
def test_hostile_payload_is_refused_and_runs_nothing(kind, where, tmp_path):
    marker = tmp_path / 'payload_ran'
    path = hostile_file(kind, where, marker, tmp_path)
    with pytest.raises(ConversionError) as info:
        readers.read(path)
    assert_one_line_refusal(str(info.value), path, PAYLOADS[kind][1])
    assert not marker.exists(), 'the payload ran'


RAW = {
    # BUILD on a class: would set argparse.Namespace.pwned for the whole process.
    'state of a class': (b'\x80\x02cargparse\nNamespace\nN}X\x05\x00\x00\x00pwnedK\x01s\x86b.',
                         'sets the state of the class argparse.Namespace'),
    # BUILD on a function: would rename torch's rebuild function.
    'state of a function': (b'\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x08\x00\x00\x00__name__X\x01\x00\x00'
                            b'\x00xs\x86b.', 'sets the state of the function torch._utils._rebuild_tensor_v2'),
    'codec other than latin-1': (b'\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.',
                                 "calls _codecs.encode with the 'zlib' codec"),
    'torch beyond the allowlist': (b'\x80\x02ctorch.nn.modules.linear\nLinear\n)R.',
                                   'calls torch.nn.modules.linear.Linear'),
    'newline in a global name': (b'\x80\x04\x8c\x02os\x8c\x07sys\ntem\x93.',
                                 r'calls os.sys\ntem'),
    # numpy data of Python objects from the file's bytes: pointers the file chooses.
    'numpy objects from raw bytes': (pickle.dumps(Reduce(np.core.numeric._frombuffer, b'\0' * 8, np.dtype('O'),
                                                         (1,), 'C'), protocol=2),
                                     'builds numpy data of Python objects'),
    'numpy array over raw memory': (pickle.dumps(Reduce(np.ndarray, (1,), np.dtype('f8'), b'\0' * 8), protocol=2),
                                    'constructs a numpy array over raw memory'),
    'object array': (pickle.dumps(np.array([1, 'a'], dtype=object), protocol=2), 'builds numpy data of Python objects'),
    # _rebuild_from_type_v2 calls __setstate__ of what it builds, where BUILD is not checked.
    'dtype state through a tensor rebuild': (pickle.dumps(Reduce(
        torch._tensor._rebuild_from_type_v2, np.dtype, np.dtype, ('f8',), (3, '<', None, None, None, -1, -1, 0)),
        protocol=2), 'rebuilds the class numpy.dtype through the class numpy.dtype'),
}


@pytest.mark.parametrize('case', sorted(RAW))
def test_raw_pickle_tricks_are_refused(case, tmp_path):
    data, expected = RAW[case]
    path = tmp_path / 'raw.pth'
    path.write_bytes(data)
    with pytest.raises(ConversionError) as info:
        readers.read(path)
    assert_one_line_refusal(str(info.value), path, expected)
    assert not hasattr(argparse.Namespace, 'pwned')
    assert torch._utils._rebuild_tensor_v2.__name__ == '_rebuild_tensor_v2'


def test_extension_codes_go_through_find_class(tmp_path):
    copyreg.add_extension('posix', 'system', 241)
    try:
        data = b'\x80\x02\x82\xf1.'  # EXT1 241
        assert pickle.loads(data) is os.system  # and now copyreg's extension cache holds it too
        (tmp_path / 'ext.pth').write_bytes(data)
        with pytest.raises(ConversionError) as info:
            readers.read(tmp_path / 'ext.pth')
    finally:
        copyreg.remove_extension('posix', 'system', 241)
    assert_one_line_refusal(str(info.value), tmp_path / 'ext.pth', 'calls posix.system')


def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / 'scripted.pt'
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(ConversionError) as info:
        readers.read(path)
    message = str(info.value)
    assert '\n' not in message and message.startswith(f'{path}: refused: a TorchScript archive'), message
    assert 'torch.jit.load' in message


CLI_CASES = [('os.system', 'mmengine hub'), ('getattr(__import__)', 'top'), ('in placeholder state', 'legacy hub')]


def start_commands(tmp_path_factory):
    """{(kind, where): (a hostile file, its marker, ``tnt-convert``'s run on it in its folder)}, queued at
    the start of the session."""
    runs = {}
    for kind, where in CLI_CASES:
        d = tmp_path_factory.mktemp('cli_refusal')
        path = hostile_file(kind, where, d / 'payload_ran', d)
        runs[kind, where] = path, d / 'payload_ran', Command(
            [sys.executable, '-m', 'convert.cli', '--no-progress', path, d / 'out.ckpt'], cwd=d, timeout=600)
    return runs


@pytest.mark.parametrize('kind, where', CLI_CASES)
def test_cli_refuses_with_one_line(kind, where, tmp_path_factory):
    path, marker, command = started(start_commands, tmp_path_factory)[kind, where]
    p = command.result(check=False)
    lines = p.stderr.splitlines()
    assert p.returncode == EXIT_BAD_INPUT and len(lines) == 1, p.stderr
    assert lines[0].startswith(f'tnt-convert: error: {path}: refused: the pickle calls '), lines[0]
    assert PAYLOADS[kind][1] in lines[0]
    assert not (path.parent / 'out.ckpt').exists() and not marker.exists()
    assert sorted(os.listdir(path.parent)) == [path.name]
