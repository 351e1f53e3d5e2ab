"""File-to-file conversion: read, recognise, adapt, write atomically, verify, report."""
import math
import os
import time

from convert import writers
from convert.api import read_hub
from convert.canonical import (MINDSPORE_NAMES, OFFICIAL, TIMM, TORCH_NAMES, adapt, from_timm,
                               new_head)
from convert.dtypes import DTYPES, stored_nbytes
from convert.errors import ConversionError
from convert.writers import MINDSPORE, PYTORCH


def _same_file(a, b):
    return os.path.exists(b) and os.path.samefile(a, b)


def convert_file(src, dst, to=None, layout=TIMM, model_name=None, num_classes=None, img_size=None,
                 dtype='fp32', ema=False, force=False, verify=True, seed=0, progress=False):
    """Convert checkpoint ``src`` into ``dst``; returns the report dict.

    ``to``: 'mindspore' or 'torch' (default: the other framework than the source's).
    ``layout``: 'timm' or 'official' (torch outputs only). ``dst``'s suffix picks the
    container (.ckpt, .safetensors, .pth/.pt/.bin/.pth.tar). ``dst`` appears only after
    writing (and verification, if on) succeeded; ``src`` is only read.
    """
    t0 = time.perf_counter()
    src, dst = os.fspath(src), os.fspath(dst)
    if dtype not in DTYPES:
        raise ConversionError(f'unknown dtype {dtype!r}; choose from {", ".join(DTYPES)}')
    if layout not in (TIMM, OFFICIAL):
        raise ConversionError(f'unknown layout {layout!r}; choose timm or official')
    if os.path.exists(src) and _same_file(src, dst):
        raise ConversionError(f'{dst}: is the input file; the input is never overwritten')
    can, ckpt = read_hub(src, model_name, ema)
    source = MINDSPORE if can.names == MINDSPORE_NAMES else PYTORCH
    target = to or (PYTORCH if source == MINDSPORE else MINDSPORE)
    if target not in (MINDSPORE, PYTORCH):
        raise ConversionError(f'unknown target framework {target!r}; choose mindspore or torch')
    if layout == OFFICIAL and target != PYTORCH:
        raise ConversionError('the official layout is a torch layout; use --to torch')
    writers.check_target(dst, target, force)
    arrays, nc, size, notes = adapt(can, num_classes, img_size, head=lambda d, n: new_head(d, n, seed))
    stored = from_timm(arrays, layout, MINDSPORE_NAMES if target == MINDSPORE else TORCH_NAMES)
    total = sum(stored_nbytes(a, dtype) for a in stored.values())
    t_read = time.perf_counter() - t0
    from tqdm import tqdm
    with tqdm(total=total, unit='B', unit_scale=True, desc=f'writing {os.path.basename(dst)}',
              disable=not progress) as bar:
        tmp = writers.write_temp(dst, stored, target, dtype, bar.update)
    t_written = time.perf_counter() - t0
    report = dict(
        input=src, input_format=ckpt.format, input_bytes=os.path.getsize(src), notes=ckpt.notes + notes,
        layout=can.description, variant=can.variant, source=source, target=target,
        output=dst, output_layout=layout, dtype=dtype, num_classes=nc, img_size=size,
        tensors=len(stored), params=sum(math.prod(a.shape) for a in stored.values()),
        output_bytes=os.path.getsize(tmp), read_seconds=t_read, write_seconds=t_written - t_read,
        convert_seconds=t_written)
    try:
        if verify:
            from convert.verify import steps, verify as run_verify
            t1 = time.perf_counter()
            with tqdm(total=steps(dtype), desc='verifying', unit='step',
                      disable=not progress) as bar:
                check = run_verify(tmp, arrays, source, target, layout, can.variant, nc, size, dtype,
                                   step=bar.update)
            check['seconds'] = time.perf_counter() - t1
            report['verification'] = check
            if not check['passed']:
                raise ConversionError(f'verification failed: {check["verdict"]}')
        writers.commit(tmp, dst)
    except BaseException:
        writers.discard(tmp)
        raise
    return report
