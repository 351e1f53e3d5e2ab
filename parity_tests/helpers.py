"""What the test modules share; no test module imports another.

Sections: checkpoint files of every TNT family (keyed from the layout descriptions,
independent of ``convert.keymap``), checkpoint files as the tools write them, reference
runs computed once per session, the CPU kernels that ``impl='cpu'`` tests need, and the
commands run as a user runs them (queued at the start of the session, see ``Command``).
"""
import atexit
import contextlib
import csv
import functools
import importlib
import io
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import nn, ops

import mindspore_tnt
from convert.layouts import timm_shapes
from convert.transfer import numpy_to_mindspore, torch_to_numpy
from parity.forward import random_models, set_mode
from torch_ref.outputs import torch_outputs
from parity.gradients import make_labels, torch_gradients
from tnt_common.fixtures import make_batch, random_timm_weights
from tnt_common.cli import EXIT_BAD_INPUT
from tnt_common.pyramid import stage_names
from tnt_common.variants import PYRAMID_VARIANTS, VARIANTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --- Checkpoint files of every TNT family, keyed from the layout descriptions ---
# Checkpoint files of every TNT family, keyed from the layout descriptions (docs/convert.md).
#
# Independent of ``convert.keymap``: each function here re-keys a timm-named state dict the
# way that family's own code names its tensors, so the converter is tested against the
# descriptions, not against itself.

OFFICIAL_TOP = {'pixel_embed': 'patch_embed', 'norm1_proj': 'proj_norm1', 'norm2_proj': 'proj_norm2'}
OFFICIAL_BLOCK = {'norm_in': 'inner_norm1', 'attn_in': 'inner_attn', 'norm_mlp_in': 'inner_norm2',
                  'mlp_in': 'inner_mlp', 'norm1_proj': 'proj_norm1', 'norm2_proj': 'proj_norm2',
                  'norm_out': 'outer_norm1', 'attn_out': 'outer_attn', 'norm_mlp': 'outer_norm2',
                  'mlp': 'outer_mlp'}
# Biases the model zoo TNT does not have, as regexes over timm names.
ZOO_ABSENT = (r'blocks\.\d+\.attn_(in|out)\.proj\.bias', r'blocks\.\d+\.mlp(_in)?\.fc2\.bias',
              r'pixel_embed\.proj\.bias', r'proj\.bias', r'head\.bias')
MM_BLOCK = {'norm_in': 'inner_block.norm_attn', 'attn_in': 'inner_block.attn.attn', 'norm_mlp_in': 'inner_block.norm_ffn',
            'norm_out': 'outer_block.norm_attn', 'attn_out': 'outer_block.attn.attn', 'norm_mlp': 'outer_block.norm_ffn',
            'norm1_proj': 'norm_proj', 'proj': 'projection'}


def inner_pos_of(pixel_pos):
    """``inner_pos[0, r*W + c, :] = pixel_pos[0, :, r, c]`` for the (H, W) word grid of ``pixel_pos``."""
    _, _, rows, cols = pixel_pos.shape
    return np.stack([pixel_pos[0, :, r, c] for r in range(rows) for c in range(cols)])[None]


def _is_norm(key):
    return 'norm' in key.rsplit('.', 2)[-2] if key.count('.') else False


def mindspore_names(state):
    """LayerNorm ``weight``/``bias`` as MindSpore's ``gamma``/``beta``."""
    out = {}
    for k, v in state.items():
        if _is_norm(k):
            k = k[:k.rindex('.')] + {'weight': '.gamma', 'bias': '.beta'}[k.rsplit('.', 1)[1]]
        out[k] = v
    return out


def to_official(state, outer_tokens=True, inner_pos=inner_pos_of):
    """A timm state dict (numpy) re-keyed as the official code names it."""
    out = {}
    for k, v in state.items():
        parts = k.split('.')
        if k == 'patch_pos':
            out['outer_pos'] = v
        elif k == 'pixel_pos':
            out['inner_pos'] = inner_pos(v)
        else:
            if parts[0] == 'blocks':
                parts[2] = OFFICIAL_BLOCK.get(parts[2], parts[2])
            else:
                parts[0] = OFFICIAL_TOP.get(parts[0], parts[0])
            out['.'.join(parts)] = v
    if outer_tokens:
        out['outer_tokens'] = np.zeros_like(state['patch_pos'][:, 1:])
    return out


def to_mindcv(state):
    """MindCV ``tnt_small``/``tnt_base``: official names, MindSpore norms, no ``outer_tokens``."""
    return mindspore_names(to_official(state, outer_tokens=False))


def zoo_weights(state):
    """``state`` with the biases the zoo lacks set to zero (the function the zoo computes)."""
    return {k: np.zeros_like(v) if any(re.fullmatch(p, k) for p in ZOO_ABSENT) else v for k, v in state.items()}


def to_zoo(state):
    """MindSpore model zoo: MindCV's names, q and k apart, ``proj_norm2_tnt``, absent biases gone."""
    out = {}
    for k, v in to_mindcv(state).items():
        if any(re.fullmatch(p, k) for p in (r'blocks\.\d+\.(inner|outer)_attn\.proj\.bias',
                                              r'blocks\.\d+\.(inner|outer)_mlp\.fc2\.bias',
                                              r'patch_embed\.proj\.bias', r'proj\.bias', r'head\.bias')):
            assert not np.any(v), f'{k} is not zero: the zoo cannot hold it'
            continue
        if k.startswith('proj_norm2.'):
            k = 'proj_norm2_tnt.' + k.split('.', 1)[1]
        if k.endswith('_attn.qk.weight'):
            q, kk = np.split(v, 2)
            out[k.replace('.qk.', '.q.')], out[k.replace('.qk.', '.k.')] = q, kk
            continue
        out[k] = v
    return out


def to_mmpretrain(state):
    """mmpretrain's ``ImageClassifier`` state dict (legacy graph): backbone.*, head.fc.*."""
    out = {}
    for k, v in state.items():
        parts = k.split('.')
        if parts[0] == 'head':
            out['head.fc.' + parts[1]] = v
        elif parts[0] == 'proj':
            out['backbone.projection.' + parts[1]] = v
        elif parts[0] != 'blocks':
            out['backbone.' + k] = v
        elif parts[2] in ('attn_in', 'attn_out'):
            side = MM_BLOCK[parts[2]]
            if parts[3] == 'qk':
                out[f'backbone.layers.{parts[1]}.{side}.in_proj_weight'] = np.concatenate(
                    [v, state[k.replace('.qk.', '.v.')]])
            elif parts[3] == 'proj':
                out[f'backbone.layers.{parts[1]}.{side}.out_proj.{parts[4]}'] = v
        elif parts[2] in ('mlp_in', 'mlp'):
            side = 'inner_block' if parts[2] == 'mlp_in' else 'outer_block'
            layer = {'fc1': 'layers.0.0', 'fc2': 'layers.1'}[parts[3]]
            out[f'backbone.layers.{parts[1]}.{side}.ffn.{layer}.{parts[4]}'] = v
        else:
            out[f'backbone.layers.{parts[1]}.{MM_BLOCK[parts[2]]}.{parts[3]}'] = v
    return out


def small_outer_stream(weights, scale=1e-3):
    """Weights whose outer tokens reach the final norm with a variance near 1e-7, where its
    eps decides the output: every outer-stream contribution scaled down (the function's
    shape is the same, only the final norm's input is small)."""
    out = dict(weights)
    for k in out:
        if k in ('cls_token', 'patch_pos', 'norm2_proj.weight', 'norm2_proj.bias') or k.endswith(
                ('.norm2_proj.weight', '.norm2_proj.bias', 'attn_out.proj.weight', 'attn_out.proj.bias',
                 '.mlp.fc2.weight', '.mlp.fc2.bias')):
            out[k] = (out[k] * scale).astype(np.float32)
    return out


# --- Checkpoint files as the tools write them, from ``{timm_name: array}`` random weights ---

TINY = 'tnt_tiny_patch16_64'


def tensors(arrays, prefix=''):
    """``{prefix + name: torch tensor}`` of numpy arrays, as ``torch.save`` stores a state dict."""
    return {prefix + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def random_state(name=TINY, seed=0):
    """Distinct, variance-preserving random weights of variant ``name`` (``tnt_common.fixtures``)."""
    return random_timm_weights(timm_shapes(name), seed)


class WithLoss(ms.nn.Cell):
    """A training wrapper as user code writes it: parameters gain a ``model.`` prefix."""

    def __init__(self, model):
        super().__init__()
        self.model = model


def save_mindspore(arrays, path, prefix=False, fmt='ckpt'):
    """``arrays`` in a mindspore_tnt model saved by ``ms.save_checkpoint`` (``prefix``: inside ``WithLoss``)."""
    net = numpy_to_mindspore(arrays, mindspore_tnt.create_model(TINY, weight_init='skip'))
    ms.save_checkpoint(WithLoss(net) if prefix else net, str(path), format=fmt,
                       append_dict={'epoch_num': 3, 'step_num': 120} if fmt == 'ckpt' else None)


# --- Runs shared by the model suites, computed once per session ---

BATCH = 2


@functools.lru_cache(maxsize=None)
def forward_reference(name):
    """(torch model, MindSpore net, images, torch forward outputs): ``random_models(name, seed=0)``
    on ``make_batch(BATCH, ...)``. The models are shared: no test changes their weights."""
    torch_model, net = random_models(name, seed=0)
    x = make_batch(BATCH, VARIANTS[name]['img_size'], seed=0)
    return torch_model, net, x, torch_outputs(torch_model, x)


@functools.lru_cache(maxsize=None)
def reference(name):
    """(timm weights, images, labels, torch forward outputs, torch (loss, grads, input grad))."""
    torch_model, _, x, outputs = forward_reference(name)
    y = make_labels(BATCH, torch_model.num_classes, seed=0)
    return torch_to_numpy(torch_model), x, y, outputs, torch_gradients(torch_model, x, y)


def fresh_net(name, impl=None):
    """A new MindSpore TNT (of formulation ``impl``, default the device's) holding ``reference(name)``'s weights."""
    return numpy_to_mindspore(reference(name)[0], mindspore_tnt.create_model(name, impl=impl, weight_init='skip'))


@functools.lru_cache(maxsize=None)
def mindspore_run(name, mode):
    """(forward outputs, (loss, grads, input grad)) of the MindSpore model in ``mode``."""
    from mindspore_tnt.outputs import mindspore_outputs
    from parity.gradients import mindspore_gradients
    _, x, y, _, _ = reference(name)
    net = fresh_net(name)
    set_mode(mode)
    return mindspore_outputs(net, x), mindspore_gradients(net, x, y)


def drop_path_step():
    """A new ``tnt_train`` train step, (net, step, noise): tnt_tiny at 32x32 with 10 classes, drop
    path 0.3 on host-fed noise for batches of 4, clipping at 5, AdamW at 1e-3, from the model's
    initialisation after seed 0."""
    from convert.transfer import mindspore_to_numpy
    from tnt_train.droppath import DropPathNoise
    from tnt_train.optim import create_optimizer
    from tnt_train.train_step import TrainStep
    ms.set_seed(0)
    init = mindspore_to_numpy(mindspore_tnt.create_model(TINY, num_classes=10, img_size=32))
    net = numpy_to_mindspore(init, mindspore_tnt.create_model(TINY, num_classes=10, img_size=32, drop_path_rate=0.3,
                                                              weight_init='skip'))
    optimizer, schedule = create_optimizer(net, [1e-3] * 10)
    noise = DropPathNoise(net, 4)
    step = TrainStep(net, optimizer, schedule, clip_grad=5., drop_path_noise=noise)
    step.set_train(True)
    return net, step, noise


@functools.lru_cache(maxsize=None)
def shared_drop_path_step(mode):
    """(net, step, noise, reset) of one ``drop_path_step()`` per mode, so that its graph is compiled
    once: ``reset()`` puts back its initial state (weights, AdamW moments and step count, LR
    schedule step); every test that runs the step calls it first."""
    from tnt_train.checkpoint import state_parameters
    net, step, noise = drop_path_step()
    params = state_parameters(step)
    initial = {p.name: p.asnumpy().copy() for p in params}

    def reset():
        for p in params:
            ms.ops.assign(p, ms.Tensor(initial[p.name]))
    return net, step, noise, reset


# --- The CPU kernels of ``impl='cpu'`` ---

class BackwardOf(nn.Cell):
    """sum(net(*xs) * dout): its gradient is ``net``'s backward of ``dout``."""

    def __init__(self, net, dout):
        super().__init__()
        self.net = net
        self.dout = ms.Tensor(dout)

    def construct(self, *xs):
        return (self.net(*xs) * self.dout).sum()


def plant_kernel_faults(source, *edit_lists):
    """Declare, as a test module is imported, the kernel ``source`` (a file of ``mindspore_tnt``)
    with each ``(old, new)`` of each edit list replaced (each ``old`` found once): the session
    builds them all in one queued command (``build_planted_kernels``), before their tests run."""
    from mindspore_tnt import cpu_kernels
    with open(os.path.join(cpu_kernels.HERE, source)) as f:
        text = f.read()
    for edits in edit_lists:
        faulty = text
        for old, new in edits:
            assert faulty.count(old) == 1, old
            faulty = faulty.replace(old, new)
        _PLANTED.setdefault((source, tuple(map(tuple, edits))), faulty)


def build_planted_kernels(tmp_path_factory):
    """Write every declared faulty source and queue one command that builds them (conftest, first)."""
    folder = tmp_path_factory.mktemp('planted')
    for i, (key, text) in enumerate(_PLANTED.items()):
        _PLANTED_PATHS[key] = folder / key[0].replace('.cc', f'_faulty{i}.cc')
        _PLANTED_PATHS[key].write_text(text)
    if _PLANTED:
        _PLANTED_BUILD.append(Command([sys.executable, '-c', 'import sys; from mindspore_tnt.cpu_kernels import build, '
                                       'compiler; [build(p, compiler()) for p in sys.argv[1:]]',
                                       *_PLANTED_PATHS.values()]))


def faulty_kernel_library(source, edits):
    """Path of the built kernel ``source`` with ``edits``, declared by ``plant_kernel_faults``."""
    from mindspore_tnt import cpu_kernels
    _PLANTED_BUILD[0].result()
    return cpu_kernels.build(str(_PLANTED_PATHS[(source, tuple(map(tuple, edits)))]), cpu_kernels.compiler())


@contextlib.contextmanager
def without_compiler(monkeypatch, module, what):
    """Inside: ``module``'s kernel as where no C++ compiler is found (``kernel_ops()`` warned
    that MindSpore's ``what`` runs instead, and gave None). After: the kernel loads again, and
    where it builds, without a warning."""
    monkeypatch.setenv('CXX', '/nonexistent/c++')
    module.kernel_ops.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=f"using MindSpore's {what}"):
            assert module.kernel_ops() is None
        yield
    finally:
        monkeypatch.undo()
        module.kernel_ops.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        built = module.kernel_ops() is not None
    assert not (built and caught), [str(w.message) for w in caught]


def check_model_falls_back(monkeypatch, module, what, attribute):
    """Where no C++ compiler is found, every ``attribute`` (``module``'s kernel) of an impl='cpu' TNT is None,
    and the model runs: TNT-tiny at 160 px, whose outer attention (101 sentences) takes the ops the
    head-moving and softmax kernels replace."""
    with without_compiler(monkeypatch, module, what):
        set_mode('pynative')
        net = mindspore_tnt.create_model('tnt_tiny_patch16_64', img_size=160, impl='cpu')
        kernels = [getattr(c, attribute) for _, c in net.cells_and_names() if hasattr(c, attribute)]
        assert kernels and all(k is None for k in kernels)
        assert net(ms.Tensor(make_batch(1, 160))).shape == (1, 1000)


CPU_KERNELS = (('gelu', 'GELU'), ('layernorm', 'LayerNorm'), ('dense', 'BiasAdd'), ('droppath', 'DropPath'),
               ('attention', 'attention'), ('square_sum', 'square-sum'), ('heads', 'Transpose'),
               ('softmax', 'Softmax'))


def require_cpu_kernels():
    """Skip the calling test, with the reason, where a CPU kernel (``CPU_KERNELS``) did not build
    (``impl='cpu'`` would run MindSpore's ops instead); fail it where ``TNT_REQUIRE_KERNELS=1`` (CI sets it)."""
    for name, what in CPU_KERNELS:
        module = importlib.import_module(f'mindspore_tnt.{name}')
        if module.kernel_ops() is not None:
            continue
        module.kernel_ops.cache_clear()  # build again, to hear why it did not
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            if module.kernel_ops() is not None:
                continue
        why = '; '.join(str(w.message) for w in caught) or f'no CPU kernel on {platform.system()}'
        message = f"impl='cpu' needs the CPU {what} kernel, which did not build: {why}"
        if os.environ.get('TNT_REQUIRE_KERNELS') == '1':
            pytest.fail(message)
        pytest.skip(message)


# --- The commands as a user runs them: processes from the repo root, queued to overlap ---

SCRIPT = os.path.join(ROOT, 'train_ascend.py')
SLOTS = max((os.cpu_count() or 2) - 1, 1)    # queued commands that run at once, one more while a test waits
# The cores the session may use: the test process runs on one of them (``run_on_one_core``), the commands on all.
CORES = os.sched_getaffinity(0) if hasattr(os, 'sched_getaffinity') else None
DIGITS_EPOCHS = 3
_LOCK = threading.Lock()
_QUEUED, _RUNNING, _WAITING, _STARTED = [], [], [], {}
# (source, edits) -> the faulty source's text, and its file; the one command that builds them
_PLANTED, _PLANTED_PATHS, _PLANTED_BUILD = {}, {}, []


def run_on_one_core():
    """Keep this process, and the threads it starts from now on, on one of ``CORES``.

    MindSpore's runtime threads stay busy between the operators they hand on: free, they took
    about a core of their own from the queued commands; on the test process's core they give
    way to it (docs/parity.md, Running the suites)."""
    if CORES:
        os.sched_setaffinity(0, {min(CORES)})


def env():
    """The environment of a command run from a checkout: the repo on PYTHONPATH, the venv on PATH."""
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    e['PATH'] = os.path.dirname(sys.executable) + os.pathsep + e.get('PATH', '')   # msrun's workers
    return e


class Command:
    """A command run from the repo root (or ``cwd``) in a process (group) of its own, as a user runs it.

    It is queued: a background thread starts it once the commands it comes ``after`` have
    ended and fewer than ``SLOTS`` commands run (one more while a test waits for one). A
    training run keeps about one core busy (mostly compiling its graph), so it overlaps with
    the tests that come before the one that reads it. ``argv`` is a list, or a function that
    gives it when the command starts (a free port, a folder copied from an earlier run).
    ``result()`` starts it at once if still queued and waits for its completed process
    (stdout, stderr as text); with ``check``, exit status 0 is asserted.
    """

    def __init__(self, argv, after=(), timeout=900, cwd=ROOT):
        self.argv, self.after, self.timeout, self.cwd = argv, tuple(after), timeout, cwd
        self.proc = self.completed = self.error = None
        with _LOCK:
            _QUEUED.append(self)
        _scheduler()

    def _start(self):
        """Under ``_LOCK``: run it now (an error on the way is raised by ``result()``)."""
        try:
            self.argv = [str(a) for a in (self.argv() if callable(self.argv) else self.argv)]
            self._out, self._err = tempfile.TemporaryFile('w+'), tempfile.TemporaryFile('w+')
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=env(), stdout=self._out, stderr=self._err,
                                         start_new_session=True)
        except Exception as e:   # result() raises it in the test that reads the command
            self.error = e
            return
        with contextlib.suppress(OSError):   # every core, as a user's command (it may have ended already)
            os.sched_setaffinity(self.proc.pid, CORES)
        self.deadline = time.monotonic() + self.timeout
        _RUNNING.append(self)

    def ended(self):
        return self.error is not None or (self.proc is not None and self.proc.poll() is not None)

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # msrun's workers too
        except ProcessLookupError:
            pass

    def result(self, check=True):
        if self.completed is None:
            for earlier in self.after:
                earlier.result(check=False)
            with _LOCK:
                if self.proc is None and self.error is None:
                    _QUEUED.remove(self)
                    self._start()
            if self.error is not None:
                raise self.error
            _WAITING.append(self)
            try:
                code = self.proc.wait(max(self.deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f'{" ".join(self.argv)} timed out after {self.timeout} s') from None
            finally:
                _WAITING.remove(self)
            self._out.seek(0)
            self._err.seek(0)
            self.completed = subprocess.CompletedProcess(self.argv, code, self._out.read(), self._err.read())
        p = self.completed
        if check and p.returncode != 0:
            raise AssertionError(f'{" ".join(p.args)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}')
        return p


@functools.lru_cache(maxsize=None)
def _scheduler():
    """The thread that starts queued commands."""
    def loop():
        while True:
            with _LOCK:
                for c in [c for c in _RUNNING if c.ended()]:
                    _RUNNING.remove(c)
                free = SLOTS + len(_WAITING) - len(_RUNNING)
                for c in [c for c in _QUEUED if all(a.ended() for a in c.after)][:max(free, 0)]:
                    _QUEUED.remove(c)
                    c._start()
            time.sleep(0.05)
    threading.Thread(target=loop, name='commands', daemon=True).start()


@atexit.register
def _stop_commands():
    with _LOCK:
        _QUEUED.clear()
        for c in _RUNNING:
            c.kill()


def started(start, tmp_path_factory):
    """``start(tmp_path_factory)``, once per session: the commands a test module queues (conftest
    queues those of every selected module before the first test runs)."""
    if start not in _STARTED:
        _STARTED[start] = start(tmp_path_factory)
    return _STARTED[start]


def tool(name, *args, **kwargs):
    """Console script ``name`` (of this virtualenv) as a queued ``Command`` (``after``, ``timeout``, ``cwd``)."""
    return Command([os.path.join(os.path.dirname(sys.executable), name), *args], **kwargs)


def call(main, args, capfd):
    """(exit code, stdout, stderr) of a console script's ``main(args)`` in this process."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capfd.readouterr()
    return code, out, err


def jpeg_bytes(**save):
    """A photo as JPEG bytes (PIL's ``save`` options; ``mode`` converts it first)."""
    import io
    from PIL import Image
    from sklearn.datasets import load_sample_images
    image, buffer = Image.fromarray(load_sample_images().images[0][:96, :128]), io.BytesIO()
    (image.convert(save.pop('mode')) if 'mode' in save else image).save(buffer, 'JPEG', **save)
    return buffer.getvalue()


def cut_jpeg(path):
    """A JPEG at ``path`` that ends within its Huffman tables, before its scan: MindSpore's Decode
    dies of SIGFPE on it."""
    data = jpeg_bytes()
    path.write_bytes(data[:data.index(b'\xff\xc4') + 40])
    return path


def train_command(*args, **kwargs):
    """``train_ascend.py args`` on CPU, queued (``Command``)."""
    return Command([sys.executable, SCRIPT, '--device', 'CPU', *args], **kwargs)


def train(*args, timeout=900, check=True):
    """Run ``train_ascend.py args`` on CPU now; the completed process (stdout, stderr as text)."""
    return train_command(*args, timeout=timeout).result(check)


def digits_run(tmp_path_factory):
    """(run folder, its ``Command``): the README's main job, shortened: ``train_ascend.py`` on
    digits (tnt_tiny, 32x32, CPU) for ``DIGITS_EPOCHS`` epochs, exported. test_run and the
    tools read it; none writes into it."""
    out = tmp_path_factory.mktemp('digits_run')
    return out, train_command('--epochs', DIGITS_EPOCHS, '--output', out, '--export')


def run_cli(*args, check=True):
    """``tnt-convert --no-progress args`` as a command: the completed process; with ``check``,
    exit status 0 is asserted."""
    p = subprocess.run([sys.executable, '-m', 'convert.cli', '--no-progress', *map(str, args)],
                       capture_output=True, text=True, env=env(), cwd=ROOT)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def convert_cli(*args, check=True):
    """``tnt-convert --no-progress args`` through ``convert.cli.main`` in this process (its verification
    runs in PyNative mode, as in a fresh process): ``run_cli``'s completed process without starting
    Python and both frameworks again."""
    from convert.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(['--no-progress', *map(str, args)])
        except SystemExit as e:
            code = e.code
    p = subprocess.CompletedProcess(['tnt-convert', *map(str, args)], code, out.getvalue(), err.getvalue())
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def weights(path):
    """``{name: array}`` of a MindSpore checkpoint file."""
    import mindspore as ms
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items() if hasattr(v, "asnumpy")}


# --- Shared by several suites: planted gradient cuts, PyramidTNT's stem BatchNorms, refused commands ---

PTNT_TINY = 'ptnt_tiny_patch16_64'
PTNT_NAMES = stage_names(PYRAMID_VARIANTS[PTNT_TINY]['depths'])   # forward_stages entries of PTNT_TINY


class StopGradient(nn.Cell):
    """``cell``'s output with its gradient cut: the forward pass is untouched."""

    def __init__(self, cell):
        super().__init__(auto_prefix=False)
        self.cell = cell

    def construct(self, x):
        return ops.stop_gradient(self.cell(x))


def with_momentum(bn, momentum):
    """A BatchNorm2d like ``bn`` (its class, ``impl``, parameters and statistics) with ``momentum``."""
    new = type(bn)(bn.num_features, eps=bn.eps, momentum=momentum, impl=bn.impl)
    for name in ('gamma', 'beta', 'moving_mean', 'moving_variance'):
        getattr(new, name).set_data(getattr(bn, name).value())
    return new


def stem_batchnorms(net):
    """(SequentialCell, index) of every BatchNorm2d of the stem."""
    stem = net.patch_embed
    return [(seq, i) for seq in (stem.common_conv, stem.inner_convs, stem.outer_convs)
            for i, cell in enumerate(seq) if isinstance(cell, nn.BatchNorm2d)]


def snapshot(path):
    """{file: (size, bytes)} of every file under ``path``."""
    return {p: (p.stat().st_size, p.read_bytes()) for p in sorted(path.rglob('*')) if p.is_file()}


def assert_refused(code, err, expected, tmp_path, before):
    """``tnt-convert`` refused: exit 2, one error line naming ``expected``, ``tmp_path`` as ``before``."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_BAD_INPUT
    assert len(lines) == 1 and lines[0].startswith('tnt-convert: error: '), err
    assert expected in lines[0], lines[0]
    assert snapshot(tmp_path) == before, 'a file was written, changed or left behind'
