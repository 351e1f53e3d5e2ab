"""What the test modules share; no test module imports another.

Sections: checkpoint files of every TNT family (keyed from the layout descriptions,
independent of ``convert.keymap``), checkpoint files as the tools write them, reference
runs computed once per session, and the commands run as a user runs them.
"""
import csv
import functools
import os
import re
import subprocess
import sys

import mindspore as ms
import numpy as np
import torch

import mindspore_tnt
import torch_ref
from convert.transfer import numpy_to_mindspore, torch_to_numpy
from parity.forward import random_models, torch_outputs
from parity.gradients import make_labels, torch_gradients
from tnt_common.fixtures import make_batch, random_timm_weights
from tnt_common.variants import VARIANTS

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
    """``inner_pos[0, h*4 + w, c] = pixel_pos[0, c, h, w]``."""
    return np.stack([pixel_pos[0, :, h, w] for h in range(4) for w in range(4)])[None]


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
    shapes = {k: v.shape for k, v in torch_ref.create_model(name).state_dict().items()}
    return random_timm_weights(shapes, seed)


class WithLoss(ms.nn.Cell):
    """A training wrapper as user code writes it: parameters gain a ``model.`` prefix."""

    def __init__(self, model):
        super().__init__()
        self.model = model


def save_mindspore(arrays, path, prefix=False, fmt='ckpt'):
    """``arrays`` in a mindspore_tnt model saved by ``ms.save_checkpoint`` (``prefix``: inside ``WithLoss``)."""
    net = numpy_to_mindspore(arrays, mindspore_tnt.create_model(TINY))
    ms.save_checkpoint(WithLoss(net) if prefix else net, str(path), format=fmt,
                       append_dict={'epoch_num': 3, 'step_num': 120} if fmt == 'ckpt' else None)


# --- Runs shared by the gradient, graph-vs-pynative and AMP suites, computed once per session ---

BATCH = 2


@functools.lru_cache(maxsize=None)
def reference(name):
    """(timm weights, images, labels, torch forward outputs, torch (loss, grads, input grad))."""
    torch_model, _ = random_models(name, seed=0)
    x = make_batch(BATCH, VARIANTS[name]['img_size'], seed=0)
    y = make_labels(BATCH, torch_model.num_classes, seed=0)
    return torch_to_numpy(torch_model), x, y, torch_outputs(torch_model, x), torch_gradients(torch_model, x, y)


def fresh_net(name, impl=None):
    """A new MindSpore TNT (of formulation ``impl``, default the device's) holding ``reference(name)``'s weights."""
    return numpy_to_mindspore(reference(name)[0], mindspore_tnt.create_model(name, impl=impl))


@functools.lru_cache(maxsize=None)
def mindspore_run(name, mode):
    """(forward outputs, (loss, grads, input grad)) of the MindSpore model in ``mode``."""
    from parity.forward import mindspore_outputs, set_mode
    from parity.gradients import mindspore_gradients
    _, x, y, _, _ = reference(name)
    net = fresh_net(name)
    set_mode(mode)
    return mindspore_outputs(net, x), mindspore_gradients(net, x, y)


# --- The commands as a user runs them: subprocesses from the repo root ---

SCRIPT = os.path.join(ROOT, 'train_ascend.py')


def env():
    """The environment of a command run from a checkout: the repo on PYTHONPATH, the venv on PATH."""
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    e['PATH'] = os.path.dirname(sys.executable) + os.pathsep + e.get('PATH', '')   # msrun's workers
    return e


def run_cli(*args, check=True):
    """The completed process; with ``check``, exit status 0 is asserted."""
    p = subprocess.run([sys.executable, '-m', 'convert.cli', '--no-progress', *map(str, args)],
                       capture_output=True, text=True, env=env(), cwd=ROOT)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def train(*args, timeout=900, check=True):
    """Run ``train_ascend.py args`` on CPU; the completed process (stdout, stderr as text)."""
    proc = subprocess.run([sys.executable, SCRIPT, '--device', 'CPU', *map(str, args)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'train_ascend.py {" ".join(map(str, args))} exited {proc.returncode}:\n'
                             f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc


def rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def weights(path):
    """``{name: array}`` of a MindSpore checkpoint file."""
    import mindspore as ms
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items() if hasattr(v, "asnumpy")}


def max_rel_diff(a, b):
    """Largest per-tensor ``max|a - b| / max|b|`` over the tensors of ``b``."""
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(a[k] - b[k])) / max(float(np.max(np.abs(b[k]))), 1e-12)) for k in b)
