"""PyramidTNT checkpoints: the official PyTorch layout and mindspore_tnt.ptnt's names.

A file is a PyramidTNT by its names (``keymap.PYRAMID_MARKER``), its layout by MindSpore's
norm names, its variant by every key and shape (``layouts.pyramid_shapes`` at the file's
class count and the input size ``outer_pos`` implies). Between reader and writer it is
``{official name: array}`` without torch's BatchNorm counters (``keymap.PYRAMID_TORCH_ONLY``):
MindSpore has none and no forward pass reads them; torch files get them back as 0.
"""
import math
import re

import numpy as np

from convert import keymap
from convert.canonical import Canonical, new_head, resolve_numerics
from convert.errors import ConversionError
from convert.layouts import pyramid_shapes
from tnt_common.pyramid import STEM_STRIDE
from tnt_common.strict import check_strict
from tnt_common.variants import PYRAMID_VARIANTS, list_models

_NAMES = keymap.PYRAMID_TO_MINDSPORE


def is_pyramid(keys):
    """Whether stored names ``keys`` are a PyramidTNT's."""
    return any(re.fullmatch(keymap.PYRAMID_MARKER, k) for k in keys)


def _facts(shapes):
    """(classes, input size or None) read from stored shapes."""
    n = shapes['outer_pos'][1] if len(shapes.get('outer_pos', ())) == 3 else 0
    side = math.isqrt(n)
    head = shapes.get('head.weight')
    return (head[0] if head else 0), (side * STEM_STRIDE if side and side * side == n else None)


def _expected(name, nc, size, mindspore):
    try:
        return pyramid_shapes(name, nc, size, mindspore)
    except ValueError:  # grids that do not merge evenly: no variant
        return None


def _variant(shapes, model_name, mindspore):
    nc, size = _facts(shapes)
    if model_name is not None:
        if model_name not in PYRAMID_VARIANTS:
            raise ConversionError(f'{model_name} is not a PyramidTNT variant, the file holds a PyramidTNT; '
                                  f'known: {", ".join(list_models("ptnt"))}')
        expected = _expected(model_name, nc, size or PYRAMID_VARIANTS[model_name]['img_size'], mindspore)
        if expected is None:
            raise ConversionError(f'outer_pos {shapes.get("outer_pos")}: no input size of {model_name} has that grid')
        try:
            check_strict(expected, shapes, f'not a {model_name} checkpoint')
        except (KeyError, ValueError) as e:
            raise ConversionError(str(e.args[0])) from None
        return model_name, nc, size
    found = [name for name in list_models('ptnt') if size and _expected(name, nc, size, mindspore) == shapes]
    if len(found) != 1:
        raise ConversionError(
            f'no registered PyramidTNT variant has these keys and shapes ({len(shapes)} tensors, outer_pos '
            f'{shapes.get("outer_pos")}, {nc} classes); known: {", ".join(list_models("ptnt"))}; '
            '--model NAME names the missing or mismatched keys')
    return found[0], nc, size


def to_canonical(arrays, model_name=None, numerics=None, stored_numerics=None):
    """Stored PyramidTNT ``arrays`` (either layout) as a ``Canonical`` with official names."""
    mindspore = any(k.endswith(('.gamma', '.moving_mean')) for k in arrays)
    layout = 'mindspore' if mindspore else 'official'
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    variant, nc, size = _variant(shapes, model_name, mindspore)
    if mindspore:
        out = keymap.one_to_one((k, _NAMES.backward(k), v) for k, v in arrays.items())
    else:
        out = {k: v for k, v in arrays.items() if not _NAMES.drops(k)}
    chosen, origin = resolve_numerics(keymap.LAYOUTS[layout], stored_numerics, numerics)
    return Canonical(out, layout, variant, nc, size, chosen, origin)


def from_canonical(arrays, layout):
    """Canonical ``arrays`` under the stored names of ``layout`` ('official' or 'mindspore')."""
    if layout == 'mindspore':
        return {_NAMES.forward(k): v for k, v in arrays.items()}
    out = dict(arrays)
    for template, (beside, value) in keymap.PYRAMID_TORCH_ONLY.items():
        regex = keymap.template_regex(beside)
        for k in arrays:
            m = regex.fullmatch(k)
            if m:
                out[template.format(**m.groupdict())] = np.array(value, np.int64)
    return out


def check_img_size(can, img_size):
    """ConversionError unless ``img_size`` (``--img-size``) is None or the file's: the input size
    is fixed (``outer_pos`` and every ``relative_pos`` are for it)."""
    if img_size not in (None, can.img_size):
        raise ConversionError(f'--img-size {img_size}: {can.variant} keeps its input size {can.img_size} '
                              '(outer_pos and relative_pos are not resampled)')


def adapt(can, num_classes=None, img_size=None, head=None):
    """As ``canonical.adapt``: a new head for another class count; the input size is fixed
    (``check_img_size``)."""
    arrays, notes = dict(can.arrays), []
    nc = can.num_classes if num_classes is None else num_classes
    if nc < 0:
        raise ConversionError(f'--num-classes must be >= 0, got {nc}')
    check_img_size(can, img_size)
    if nc != can.num_classes:
        arrays.pop('head.weight', None)
        arrays.pop('head.bias', None)
        if nc:
            arrays.update((head or new_head)(arrays['norm.weight'].shape[0], nc))
        notes.append(f'head {can.num_classes} -> {nc} classes' + (' (freshly initialised)' if nc else ' (removed)'))
    return arrays, nc, can.img_size, notes
