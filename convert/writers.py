"""Checkpoint writers: stored-name arrays -> one output file.

Containers: MindSpore ``.ckpt`` (``mindspore_ckpt``), safetensors (timm's or MindSpore's:
the same container, ``__metadata__.format`` ``pt`` or ``ms``) and torch pickles
(``.pth``, ``.pt``, ``.bin``, ``.pth.tar``). ``convert.files`` writes into the temporary
of ``tnt_common.files.atomic_output``, so an output appears whole or not at all.
"""
import json
import os

import numpy as np

from convert import mindspore_ckpt
from convert.dtypes import storage
from convert.errors import ConversionError, needs_torch

CKPT, SAFETENSORS, TORCH = 'ckpt', 'safetensors', 'torch'
MINDSPORE, PYTORCH = 'mindspore', 'torch'
TORCH_SUFFIXES = ('.pth.tar', '.pth', '.pt', '.bin', '.tar')
ST_DTYPES = {'fp32': 'F32', 'fp16': 'F16', 'bf16': 'BF16', 'int64': 'I64', 'int32': 'I32'}


def container(path):
    """(container, full suffix) of an output path, from its name."""
    name = os.path.basename(path).lower()
    if name.endswith('.ckpt'):
        return CKPT, '.ckpt'
    if name.endswith('.safetensors'):
        return SAFETENSORS, '.safetensors'
    for s in TORCH_SUFFIXES:
        if name.endswith(s):
            return TORCH, s
    raise ConversionError(f'{path}: unknown output type; name it .ckpt, .safetensors, '
                          f'or {", ".join(TORCH_SUFFIXES)}')


def check_target(path, framework, force):
    """Validate the output path for ``framework``; returns its container."""
    kind, suffix = container(path)
    if kind == CKPT and framework != MINDSPORE:
        raise ConversionError(f'{path}: .ckpt is a MindSpore format; use .pth or .safetensors for torch')
    if kind == TORCH and framework != PYTORCH:
        raise ConversionError(f'{path}: {os.path.basename(path)} is a torch format; use .ckpt or '
                              '.safetensors for MindSpore')
    if framework == MINDSPORE and not path.endswith(suffix):
        raise ConversionError(f'{path}: MindSpore loads only names ending in {suffix} (lower case); '
                              f'name it {path[:len(path) - len(suffix)]}{suffix}')
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConversionError(f'{path}: directory {parent} does not exist')
    if os.path.isdir(path):
        raise ConversionError(f'{path}: is a directory')
    if os.path.exists(path) and not force:
        raise ConversionError(f'{path}: exists; pass --force to overwrite it')
    return kind


def _stored(arrays, dtype):
    for k, v in arrays.items():
        try:
            yield (k, *storage(v, dtype))
        except ConversionError as e:
            raise ConversionError(f'{k}: {e}') from None


def _write_ckpt(f, items, strings, tick):
    for name, a, dt in items:
        mindspore_ckpt.write_tensor(f, name, a, dt)
        tick(a.nbytes)
    for name, text in strings.items():
        mindspore_ckpt.write_string(f, name, text)


def _write_safetensors(f, items, metadata, tick):
    items = list(items)
    header, offset = {'__metadata__': metadata}, 0
    for name, a, dt in items:
        header[name] = {'dtype': ST_DTYPES[dt], 'shape': list(a.shape),
                        'data_offsets': [offset, offset + a.nbytes]}
        offset += a.nbytes
    raw = json.dumps(header, separators=(',', ':')).encode()
    raw += b' ' * (-len(raw) % 8)
    f.write(len(raw).to_bytes(8, 'little') + raw)
    for _, a, _ in items:
        f.write(memoryview(np.ascontiguousarray(a)).cast('B'))
        tick(a.nbytes)


def _write_torch(f, items, wrap, tick):
    import warnings
    needs_torch('writing a torch file')
    import torch
    state, total = {}, 0
    for name, a, dt in items:
        with warnings.catch_warnings():  # read-only views of the mapped input: only read here
            warnings.filterwarnings('ignore', message='The given NumPy array is not writable')
            t = torch.from_numpy(np.ascontiguousarray(a).reshape(a.shape))  # 0-d stays 0-d
        state[name] = t.view(torch.bfloat16) if dt == 'bf16' else t
        total += a.nbytes
    torch.save(wrap(state), f)
    tick(total)


def write(path, arrays, framework, dtype='fp32', progress=None, strings=None, torch_wrap=None):
    """Write ``arrays`` (stored names) to ``path``, in the container its name gives.

    ``strings`` ({name: text}) go beside the tensors: ``.ckpt`` string entries, safetensors
    metadata; a torch file saves ``torch_wrap(state dict)`` (default: the state dict).
    ``progress(nbytes)`` is called after each tensor.
    """
    strings = strings or {}
    kind, _ = container(path)
    tick = progress or (lambda n: None)
    with open(path, 'wb') as f:
        items = _stored(arrays, dtype)
        if kind == CKPT:
            _write_ckpt(f, items, strings, tick)
        elif kind == SAFETENSORS:
            _write_safetensors(f, items, {'format': 'ms' if framework == MINDSPORE else 'pt', **strings}, tick)
        else:
            _write_torch(f, items, torch_wrap or (lambda state: state), tick)
