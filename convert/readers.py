"""Checkpoint readers: any supported file -> ``{name: numpy array}`` with wrappers removed.

The format is recognised from the file's first bytes, not its name: torch zip archives and
legacy pickles (``.pth``, ``.pt``, ``.pth.tar``, ``.bin``), safetensors (timm's or
MindSpore's), and MindSpore ``.ckpt``. Torch files are loaded with ``weights_only=True``:
a pickle that would build anything but tensors and plain containers is refused before it
runs. Names are returned as stored (minus wrapper prefixes); ``canonical`` maps them.
"""
import json
import os
import struct
import zipfile
from dataclasses import dataclass, field

import numpy as np

from convert import keymap, mindspore_ckpt
from convert.errors import ConversionError

TORCH, SAFETENSORS, MINDSPORE_CKPT = 'torch', 'safetensors', 'mindspore-ckpt'


@dataclass
class Checkpoint:
    """Tensors read from one file, by their stored names."""
    path: str
    format: str
    arrays: dict
    notes: list = field(default_factory=list)


def sniff(path):
    """The file's format from its first bytes; ConversionError if unreadable or unknown."""
    if not os.path.exists(path):
        raise ConversionError(f'{path}: no such file')
    if os.path.isdir(path):
        raise ConversionError(f'{path}: is a directory, expected a checkpoint file')
    size = os.path.getsize(path)
    if size == 0:
        raise ConversionError(f'{path}: empty file')
    with open(path, 'rb') as f:
        head = f.read(16)
    if head.startswith(b'PK\x03\x04') or head[:1] == b'\x80':
        return TORCH
    if size >= 10:
        (n,) = struct.unpack('<Q', head[:8])
        if 2 <= n <= size - 8 and head[8:9] == b'{':
            return SAFETENSORS
    if head[:1] == b'\x0a':
        return MINDSPORE_CKPT
    raise ConversionError(f'{path}: not a checkpoint (unrecognised format, first bytes {head[:8]!r})')


def _torch_load(path):
    import argparse
    import pickle
    import torch
    mmap = zipfile.is_zipfile(path)
    try:
        # argparse.Namespace: training scripts store their arguments beside the weights.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        detail = next((line for line in first if 'GLOBAL' in line or 'Unsupported' in line), first[0] if first else '')
        raise ConversionError(f'{path}: refused: the pickle holds more than tensors and plain '
                              f'containers, so loading it could run code ({detail.strip()})') from None
    except Exception as e:  # torch raises RuntimeError/EOFError/... on damaged archives
        msg = ' '.join(str(e).split()).split('. ')[0][:200]
        raise ConversionError(f'{path}: not a readable torch checkpoint (truncated or corrupt: '
                              f'{type(e).__name__}: {msg})') from None


def _tensor_to_numpy(t):
    import torch
    if t.dtype == torch.bfloat16:
        return t.float().numpy()
    return t.detach().numpy()


def _is_tensor_dict(obj):
    import torch
    return isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())


def _pick_state_dict(obj, ema, notes):
    """The state dict inside a torch checkpoint's wrapper dict."""
    if not isinstance(obj, dict):
        raise ConversionError(f'holds a {type(obj).__name__}, expected a state dict')
    if _is_tensor_dict(obj):
        if ema:
            raise ConversionError('--ema: the file is a plain state dict with no EMA weights')
        return obj
    plain = [k for k in keymap.STATE_DICT_KEYS if _is_tensor_dict(obj.get(k))]
    emas = [k for k in keymap.EMA_STATE_DICT_KEYS if _is_tensor_dict(obj.get(k))]
    chosen = emas if ema else plain
    if not chosen:
        if ema:
            raise ConversionError(f'--ema: no EMA weights ({"/".join(keymap.EMA_STATE_DICT_KEYS)}) '
                                  f'in the file; top-level keys: {sorted(map(str, obj))[:8]}')
        raise ConversionError(f'no state dict found: top-level keys {sorted(map(str, obj))[:8]}, '
                              f'expected tensors or one of {"/".join(keymap.STATE_DICT_KEYS + keymap.EMA_STATE_DICT_KEYS)}')
    if not ema and emas:
        notes.append(f'EMA weights also present ({emas[0]}); --ema selects them')
    notes.append(f'weights taken from wrapper key {chosen[0]!r}')
    return obj[chosen[0]]


def _read_torch(path, ema, notes):
    state = _pick_state_dict(_torch_load(path), ema, notes)
    return {k: _tensor_to_numpy(v) for k, v in state.items()}


def _read_safetensors(path):
    """(arrays, written by MindSpore) of a safetensors file."""
    from safetensors import safe_open
    try:
        with open(path, 'rb') as f:
            (n,) = struct.unpack('<Q', f.read(8))
            header = json.loads(f.read(n))
        bf16 = any(isinstance(v, dict) and v.get('dtype') == 'BF16' for v in header.values())
        out = {}
        with safe_open(path, framework='pt' if bf16 else 'numpy') as f:
            mindspore = (f.metadata() or {}).get('format') == 'ms'
            for k in f.keys():
                out[k] = _tensor_to_numpy(f.get_tensor(k)) if bf16 else f.get_tensor(k)
        return out, mindspore
    except ConversionError:
        raise
    except Exception as e:
        msg = ' '.join(str(e).split())[:200]
        raise ConversionError(f'{path}: not a readable safetensors file (truncated or corrupt: {msg})') from None


def _strip_prefixes(arrays, notes):
    """Remove wrapper prefixes (``module.``, ``model.``) carried by every key."""
    while True:
        for prefix in keymap.WRAPPER_PREFIXES:
            if arrays and all(k.startswith(prefix) for k in arrays):
                arrays = {k[len(prefix):]: v for k, v in arrays.items()}
                notes.append(f'prefix {prefix!r} removed')
                break
        else:
            return arrays


def _unwrapped(prefix):
    while prefix.startswith(keymap.WRAPPER_PREFIXES):
        prefix = prefix.split('.', 1)[1]
    return prefix


def _select_weights(arrays, ema, notes):
    """The weights (or, with ``ema``, the EMA weights) among a MindSpore file's entries."""
    groups = {}
    for k, v in arrays.items():
        parts = k.split('.')
        i = next((n for n, p in enumerate(parts) if p in keymap.TNT_ROOTS), None)
        prefix = None if i is None else ''.join(p + '.' for p in parts[:i])
        groups.setdefault(prefix, {})[k if i is None else '.'.join(parts[i:])] = v
    want = keymap.EMA_PREFIX if ema else ''
    chosen = [p for p in groups if p is not None and _unwrapped(p) == want]
    if len(chosen) > 1:
        raise ConversionError(f'several weight sets, under prefixes {sorted(chosen)}')
    if not chosen:
        if ema:
            raise ConversionError(f'--ema: no EMA weights ({keymap.EMA_PREFIX}*) in the file')
        return arrays  # no TNT weights: canonical says what the file holds instead
    prefix = chosen[0]
    if not ema and any(p is not None and _unwrapped(p) == keymap.EMA_PREFIX for p in groups):
        notes.append(f'EMA weights also present ({keymap.EMA_PREFIX}*); --ema selects them')
    if prefix:
        notes.append(f'prefix {prefix!r} removed')
    others = sorted(p + '*' for p in groups if p not in (None, prefix)) + sorted(groups.get(None, ()))
    if others:
        dropped = len(arrays) - len(groups[prefix])
        notes.append(f'{dropped} training-state entries dropped: {", ".join(others[:6])}'
                     f'{", ..." if len(others) > 6 else ""}')
    return groups[prefix]


def read(path, ema=False):
    """Read ``path`` into a ``Checkpoint``; ConversionError on anything unreadable."""
    path = os.fspath(path)
    fmt = sniff(path)
    notes = []
    try:
        if fmt == TORCH:
            arrays, mindspore = _read_torch(path, ema, notes), False
        elif fmt == SAFETENSORS:
            arrays, mindspore = _read_safetensors(path)
        else:
            arrays, mindspore = mindspore_ckpt.read(path), True
        if mindspore:  # training state may sit beside the weights
            if fmt == SAFETENSORS:
                notes.append('MindSpore safetensors')
            arrays = _select_weights(arrays, ema, notes)
        elif fmt == SAFETENSORS and ema:
            raise ConversionError('--ema: a safetensors file holds one set of weights')
        else:
            arrays = _strip_prefixes(arrays, notes)
    except ConversionError as e:
        msg = str(e)
        raise ConversionError(msg if msg.startswith(path) else f'{path}: {msg}') from None
    if not arrays:
        raise ConversionError(f'{path}: holds no tensors')
    bad = next((k for k, v in arrays.items() if not isinstance(v, np.ndarray)), None)
    if bad is not None:
        raise ConversionError(f'{path}: entry {bad!r} is not a tensor')
    return Checkpoint(path, fmt, arrays, notes)
