"""File-to-file conversion: read, recognise, adapt, write atomically, verify, report."""
import math
import os
import time

from convert import writers
from convert.api import adapt_any, read_hub
from convert.canonical import check_writable, from_timm, new_head
from convert.dtypes import DTYPES, stored_nbytes
from convert.errors import ConversionError
from convert.keymap import DEFAULT_LAYOUT, LAYOUTS, NUMERICS_KEY, PYRAMID_LAYOUTS
from convert.pyramid import from_canonical
from convert.writers import MINDSPORE, PYTORCH
from tnt_common.files import atomic_output
from tnt_common.numerics import PYTORCH as PYTORCH_NUMERICS
from tnt_common.variants import family


def _same_file(a, b):
    return os.path.exists(b) and os.path.samefile(a, b)


def _target(layout, to, source, dst, defaults=DEFAULT_LAYOUT):
    """(layout, framework) of the output, from ``--layout``, ``--to`` and the source;
    ``defaults``: the layout each framework writes unless told otherwise."""
    if to is not None and to not in (MINDSPORE, PYTORCH):
        raise ConversionError(f'unknown target framework {to!r}; choose mindspore or torch')
    if layout is None:
        target = to or (PYTORCH if source == MINDSPORE else MINDSPORE)
        return defaults[target], target
    if layout not in LAYOUTS:
        raise ConversionError(f'unknown layout {layout!r}; choose from {", ".join(LAYOUTS)}')
    framework = LAYOUTS[layout].framework
    kind = writers.container(dst)[0]
    if (to or framework) != framework or kind == (writers.CKPT if framework == PYTORCH else writers.TORCH):
        other = '.ckpt or .safetensors' if framework == MINDSPORE else '.pth, .pth.tar, .bin or .safetensors'
        raise ConversionError(f'the {layout} layout is a {framework} layout: write {other}'
                              + ('' if to in (None, framework) else f' with --to {framework}'))
    return layout, framework


def _torch_wrap(layout, variant, numerics):
    """What a torch file of ``layout`` saves around its state dict."""
    if layout == 'mmpretrain':  # an mmengine checkpoint
        return lambda state: {'meta': {'arch': variant}, 'state_dict': state}
    if numerics != PYTORCH_NUMERICS:  # timm's loaders take ``state_dict`` from a wrapper
        return lambda state: {'state_dict': state, NUMERICS_KEY: numerics.to_json()}
    return None


def convert_file(src, dst, to=None, layout=None, model_name=None, num_classes=None, img_size=None,
                 dtype='fp32', ema=False, force=False, verify=True, seed=0, progress=False, numerics=None):
    """Convert checkpoint ``src`` (a file or a hub folder) into ``dst``; returns the report dict.

    ``to``: 'mindspore' or 'torch' (default: the other framework than the source's, or the
    framework of ``layout``). ``layout``: a family of ``keymap.LAYOUTS`` (default: timm names
    for torch, mindspore_tnt names for MindSpore). ``numerics`` overrides the numerics the
    source records or its family implies. ``dst``'s suffix picks the container (.ckpt,
    .safetensors, .pth/.pt/.bin/.pth.tar). ``dst`` appears only after writing (and
    verification, if on) succeeded; ``src`` is only read.
    """
    t0 = time.perf_counter()
    src, dst = os.fspath(src), os.fspath(dst)
    if dtype not in DTYPES:
        raise ConversionError(f'unknown dtype {dtype!r}; choose from {", ".join(DTYPES)}')
    if os.path.exists(src) and _same_file(src, dst):
        raise ConversionError(f'{dst}: is the input file; the input is never overwritten')
    can, ckpt = read_hub(src, model_name, ema, numerics)
    if _same_file(ckpt.path, dst):  # a hub folder's own weights file
        raise ConversionError(f'{dst}: is the input file; the input is never overwritten')
    source = can.framework
    pyramid = family(can.variant) == 'ptnt'
    defaults = {LAYOUTS[k].framework: k for k in PYRAMID_LAYOUTS} if pyramid else DEFAULT_LAYOUT
    layout, target = _target(layout, to, source, dst, defaults)
    writers.check_target(dst, target, force)
    check_writable(layout, can.variant, can.numerics)
    if layout == 'mmpretrain' and writers.container(dst)[0] != writers.TORCH:
        raise ConversionError(f'{dst}: the mmpretrain layout is an mmengine .pth file')
    arrays, nc, size, notes = adapt_any(can, num_classes, img_size, head=lambda d, n: new_head(d, n, seed))
    if layout == 'timm' and can.numerics != PYTORCH_NUMERICS:
        notes.append(f'numerics {can.numerics.name} recorded in the file: timm\'s own TNT would run pytorch '
                     'numerics; load it with convert or torch_ref')
    stored = from_canonical(arrays, layout) if pyramid else from_timm(arrays, layout)
    total = sum(stored_nbytes(a, dtype) for a in stored.values())
    t_read = time.perf_counter() - t0
    from tqdm import tqdm
    with atomic_output(dst, suffix=writers.container(dst)[1]) as tmp:   # '.ckpt' alone has no extension
        with tqdm(total=total, unit='B', unit_scale=True, desc=f'writing {os.path.basename(dst)}',
                  disable=not progress) as bar:
            writers.write(tmp, stored, target, dtype, bar.update, strings={NUMERICS_KEY: can.numerics.to_json()},
                          torch_wrap=_torch_wrap(layout, can.variant, can.numerics))
        t_written = time.perf_counter() - t0
        report = dict(
            input=src, input_format=ckpt.format, input_bytes=os.path.getsize(ckpt.path), notes=ckpt.notes + notes,
            layout=can.description, variant=can.variant, source=source, target=target,
            numerics=can.numerics.describe(), numerics_origin=can.numerics_origin,
            output=dst, output_layout=layout, dtype=dtype, num_classes=nc, img_size=size,
            tensors=len(stored), params=sum(math.prod(a.shape) for a in stored.values()),
            output_bytes=os.path.getsize(tmp), read_seconds=t_read, write_seconds=t_written - t_read,
            convert_seconds=t_written)
        if verify:
            from convert.verify import steps, verify as run_verify
            t1 = time.perf_counter()
            with tqdm(total=steps(dtype), desc='verifying', unit='step', disable=not progress) as bar:
                check = run_verify(tmp, arrays, source, target, layout, can.variant, nc, size, can.numerics,
                                   dtype, step=bar.update)
            check['seconds'] = time.perf_counter() - t1
            report['verification'] = check
            if not check['passed']:
                raise ConversionError(f'verification failed: {check["verdict"]}')
    return report
