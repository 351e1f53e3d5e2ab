"""Checkpoint readers: any supported file -> ``{name: numpy array}`` with wrappers removed.

The format is recognised from the file's first bytes, not its name: torch zip archives and
legacy pickles (``.pth``, ``.pt``, ``.pth.tar``, ``.bin``), safetensors (timm's or
MindSpore's), and MindSpore ``.ckpt``. A Hugging Face hub folder is read through its
``model.safetensors`` (else ``pytorch_model.bin``), its ``config.json`` naming the
variant. Torch files go through ``safe_pickle``: training files load without running
anything they name, and a pickle that asks for code is refused before it runs. Names are
returned as stored (minus wrapper prefixes); ``canonical`` maps them.
"""
import json
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from convert import keymap, mindspore_ckpt
from convert.dtypes import from_bf16_bits
from convert.errors import ConversionError, needs_torch

TORCH, SAFETENSORS, MINDSPORE_CKPT = 'torch', 'safetensors', 'mindspore-ckpt'


HUB_WEIGHTS = ('model.safetensors', 'pytorch_model.bin')
HUB_CONFIG = 'config.json'


@dataclass
class Checkpoint:
    """Tensors read from one file, by their stored names.

    ``numerics``: the file's own record of its numerics (JSON), if it has one;
    ``architecture``/``num_classes``: what a hub folder's ``config.json`` says.
    """
    path: str
    format: str
    arrays: dict
    notes: list = field(default_factory=list)
    numerics: str = None
    architecture: str = None
    num_classes: int = None


def hub_folder(path):
    """(weights file, config dict) of a Hugging Face hub folder."""
    weights = next((os.path.join(path, n) for n in HUB_WEIGHTS if os.path.isfile(os.path.join(path, n))), None)
    if weights is None:
        raise ConversionError(f'{path}: is a directory without {" or ".join(HUB_WEIGHTS)}; expected a '
                              'checkpoint file or a Hugging Face hub folder')
    config = {}
    cfg = os.path.join(path, HUB_CONFIG)
    if os.path.isfile(cfg):
        try:
            with open(cfg) as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            raise ConversionError(f'{cfg}: unreadable ({" ".join(str(e).split())})') from None
        if not isinstance(config, dict):
            raise ConversionError(f'{cfg}: expected a JSON object')
        for key, kind, what in (('architecture', str, 'a string'), ('num_classes', int, 'an integer')):
            value = config.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise ConversionError(f'{cfg}: {key} {json.dumps(value)} is not {what}')
    return weights, config


def sniff(path):
    """The file's format from its first bytes; ConversionError if unreadable or unknown."""
    if not os.path.exists(path):
        raise ConversionError(f'{path}: no such file')
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
    from convert import safe_pickle
    needs_torch(f'{path}: a torch file; reading it')
    try:
        return safe_pickle.load_torch(path)
    except ConversionError as e:
        raise ConversionError(f'{path}: {e}') from None
    except Exception as e:  # torch raises RuntimeError/EOFError/... on damaged archives
        msg = ' '.join(str(e).split()).split('. ')[0][:200]
        raise ConversionError(f'{path}: not a readable torch checkpoint (truncated or corrupt: '
                              f'{type(e).__name__}: {msg})') from None


def _tensor_to_numpy(t):
    import torch
    if t.dtype == torch.bfloat16:
        return t.float().numpy()
    try:
        return t.detach().numpy()
    except (TypeError, RuntimeError) as e:
        raise ConversionError(f'a {t.dtype} tensor, which numpy cannot hold ({" ".join(str(e).split())[:100]})') \
            from None


def _is_tensor_dict(obj):
    import torch
    return isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in obj.items())


def _pick_state_dict(obj, ema, notes):
    """The state dict inside a torch checkpoint's wrapper dict."""
    if not isinstance(obj, dict):
        raise ConversionError(f'holds a {type(obj).__name__}, expected a state dict')
    if _is_tensor_dict(obj.get(keymap.MMENGINE_EMA_KEY)) and _is_tensor_dict(obj.get('state_dict')):
        # mmengine's EMAHook swaps the averaged weights into state_dict before saving; the
        # raw ones go to ema_state_dict. state_dict is the model mmengine evaluates either way.
        notes.append("mmengine file: state_dict holds the EMA weights (ema_state_dict the raw ones, not used)")
        return obj['state_dict']
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
    """(arrays, the file's numerics record or None) of a torch file."""
    obj = _torch_load(path)
    numerics = obj.get(keymap.NUMERICS_KEY) if isinstance(obj, dict) else None
    if numerics is not None and not isinstance(numerics, str):
        raise ConversionError(f'{keymap.NUMERICS_KEY} is a {type(numerics).__name__}, expected a JSON string')
    state = _pick_state_dict(obj, ema, notes)
    return {k: _tensor_to_numpy(v) for k, v in state.items()}, numerics


def _read_safetensors(path):
    """(arrays, written by MindSpore, metadata) of a safetensors file."""
    from safetensors import safe_open
    try:
        with open(path, 'rb') as f:
            (n,) = struct.unpack('<Q', f.read(8))
            header = json.loads(f.read(n))
        out = {}
        with safe_open(path, framework='numpy') as f:   # checks the header: offsets in the file, no overlap
            metadata = f.metadata() or {}
            for k in f.keys():
                if header[k]['dtype'] == 'BF16':   # numpy has no bfloat16: its bits, widened to fp32
                    begin, end = header[k]['data_offsets']
                    bits = np.fromfile(path, np.uint16, (end - begin) // 2, offset=8 + n + begin)
                    out[k] = from_bf16_bits(bits).reshape(header[k]['shape'])
                else:
                    out[k] = f.get_tensor(k)
        return out, metadata.get('format') == 'ms', metadata
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
    others = sorted(p + '*' if p else 'the weights (not the EMA)' for p in groups if p not in (None, prefix)) + \
        sorted(groups.get(None, ()))
    if others:
        dropped = len(arrays) - len(groups[prefix])
        notes.append(f'{dropped} training-state entries dropped: {", ".join(others[:6])}'
                     f'{", ..." if len(others) > 6 else ""}')
    return groups[prefix]


def read(path, ema=False):
    """Read ``path`` (a file or a hub folder) into a ``Checkpoint``; ConversionError on anything unreadable."""
    path, config, notes, numerics = os.fspath(path), {}, [], None
    if os.path.isdir(path):
        path, config = hub_folder(path)
        notes.append(f'hub folder: {os.path.basename(path)}' + (f' and {HUB_CONFIG}' if config else ''))
    fmt = sniff(path)
    try:
        if fmt == TORCH:
            (arrays, numerics), mindspore = _read_torch(path, ema, notes), False
        elif fmt == SAFETENSORS:
            arrays, mindspore, metadata = _read_safetensors(path)
            numerics = metadata.get(keymap.NUMERICS_KEY)
        else:
            arrays, mindspore = mindspore_ckpt.read(path), True
            numerics = arrays.pop(keymap.NUMERICS_KEY, None)
            numerics = None if numerics is None else str(numerics)
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
    bad = next((k for k, v in arrays.items() if not isinstance(v, np.ndarray) or v.dtype.kind in 'USO'), None)
    if bad is not None:
        raise ConversionError(f'{path}: entry {bad!r} is not a tensor')
    return Checkpoint(path, fmt, arrays, notes, numerics, config.get('architecture'), config.get('num_classes'))
