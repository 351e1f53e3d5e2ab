"""Stored names -> the hub format ``{timm_name: array}`` and back, with layout and variant.

``to_timm`` recognises the layout from names (timm, official Huawei, MindSpore names over
either timm graph) and the variant from shapes (``layouts.matching_variants``); ``from_timm``
writes any layout from the hub format. Both use the rules of ``keymap``.
"""
from dataclasses import dataclass

import numpy as np

from convert import keymap
from convert.errors import ConversionError
from convert.layouts import describe, matching_variants, timm_shapes
from convert.transfer import check_keys, check_shapes
from tnt_common.variants import VARIANTS, list_models

TIMM, OFFICIAL = 'timm', 'official'
TORCH_NAMES, MINDSPORE_NAMES = 'torch', 'mindspore'
TNT_ANCHORS = ('cls_token', 'patch_pos', 'pixel_pos')


@dataclass
class Canonical:
    """A checkpoint in the hub format, with what was recognised about it."""
    arrays: dict
    layout: str        # TIMM or OFFICIAL
    names: str         # TORCH_NAMES or MINDSPORE_NAMES
    variant: str
    num_classes: int
    img_size: int

    @property
    def description(self):
        if self.names == MINDSPORE_NAMES:
            base = 'mindspore_tnt (MindSpore names)'
        else:
            base = 'official Huawei PyTorch' if self.layout == OFFICIAL else 'timm'
        return base + (', legacy graph' if VARIANTS[self.variant]['legacy'] else '')


def _examples(keys, n=4):
    keys = sorted(keys)
    return ', '.join(keys[:n]) + (', ...' if len(keys) > n else '')


def _reject_zoo(keys):
    import re
    if any(re.fullmatch(p, k) for p in keymap.ZOO_MARKERS for k in keys):
        raise ConversionError(
            'this is a MindSpore model zoo TNT checkpoint (research/cv/TNT: separate q and k '
            'projections, several layers without bias, eps 1e-7, tanh GELU): a different '
            'architecture, not loadable into mindspore_tnt')


def _official_to_timm(arrays):
    out = {}
    for k, v in arrays.items():
        if k in keymap.OFFICIAL_UNUSED:
            continue
        name = keymap.OFFICIAL_TO_TIMM.forward(k)
        if name in keymap.OFFICIAL_VALUE_TRANSFORMS and v.ndim == 3:
            v = keymap.OFFICIAL_VALUE_TRANSFORMS[name][0](v)
        out[name] = v
    return out


def _variant(shapes, model_name):
    facts = describe(shapes)
    if model_name is not None:
        if model_name not in VARIANTS:
            raise ConversionError(f'unknown model {model_name!r}; known: {", ".join(list_models())}')
        if facts['img_size'] is None:
            raise ConversionError(f'patch_pos has {shapes["patch_pos"][1]} rows: not 1 + a square grid')
        expected = timm_shapes(model_name, facts['num_classes'], facts['img_size'])
        try:
            check_keys(expected, shapes, f'not a {model_name} checkpoint')
            check_shapes(expected, shapes, f'not a {model_name} checkpoint')
        except (KeyError, ValueError) as e:
            raise ConversionError(str(e.args[0])) from None
        return model_name
    found = matching_variants(shapes)
    if len(found) > 1:
        raise ConversionError(f'ambiguous: the shapes fit {", ".join(found)}; choose one with --model')
    if not found:
        raise ConversionError(
            f'no registered TNT variant has these keys and shapes (embed_dim {facts["embed_dim"]}, '
            f'inner_dim {facts["inner_dim"]}, depth {facts["depth"]}, legacy {facts["legacy"]}, '
            f'{len(shapes)} tensors); known: {", ".join(list_models())}; --model NAME names '
            'the missing or mismatched keys')
    return found[0]


def to_timm(arrays, model_name=None):
    """Recognise ``arrays`` (stored names) and return them as a ``Canonical``."""
    keys = set(arrays)
    _reject_zoo(keys)
    names = TORCH_NAMES
    if any(k.endswith(('.gamma', '.beta')) for k in keys):
        names = MINDSPORE_NAMES
        arrays = {keymap.TIMM_TO_MINDSPORE.backward(k): v for k, v in arrays.items()}
    layout = TIMM
    if any(m in arrays for m in keymap.OFFICIAL_MARKERS):
        layout = OFFICIAL
        arrays = _official_to_timm(arrays)
    if not all(a in arrays for a in TNT_ANCHORS) or not any(k.startswith('blocks.') for k in arrays):
        raise ConversionError(f'not a TNT checkpoint: {len(keys)} tensors such as {_examples(keys)} '
                              f'(a TNT has {", ".join(TNT_ANCHORS)} and blocks.N.*)')
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    variant = _variant(shapes, model_name)
    facts = describe(shapes)
    return Canonical(arrays, layout, names, variant, facts['num_classes'], facts['img_size'])


def from_timm(arrays, layout=TIMM, names=TORCH_NAMES):
    """Hub-format ``arrays`` under the stored names of ``layout`` and ``names``."""
    if layout == OFFICIAL:
        out = {}
        for k, v in arrays.items():
            if k in keymap.OFFICIAL_VALUE_TRANSFORMS:
                v = keymap.OFFICIAL_VALUE_TRANSFORMS[k][1](v)
            out[keymap.OFFICIAL_TO_TIMM.backward(k)] = v
        out.update({k: make(arrays) for k, make in keymap.OFFICIAL_UNUSED.items()})
        arrays = out
    if names == MINDSPORE_NAMES:
        arrays = {keymap.TIMM_TO_MINDSPORE.forward(k): v for k, v in arrays.items()}
    return arrays


def check_finite(arrays):
    """Refuse NaN or Inf: such weights come from a diverged run and would spread silently.

    A sum holding a NaN or an Inf is never finite, so a finite sum clears a tensor in one
    pass; only a non-finite sum is examined element by element.
    """
    for k, v in arrays.items():
        if (np.issubdtype(v.dtype, np.floating) and not np.isfinite(np.sum(v))
                and not np.isfinite(v).all()):
            bad = int(np.size(v) - np.count_nonzero(np.isfinite(v)))
            raise ConversionError(f'{k} holds {bad} NaN/Inf values: refusing to convert a broken checkpoint')


def new_head(embed_dim, num_classes, seed=0):
    """A fresh classifier as the models initialise it: trunc-normal(0.02, +-2) weight, zero bias."""
    rng = np.random.default_rng(seed)
    w = np.clip(rng.normal(0., 0.02, (num_classes, embed_dim)), -2., 2.).astype(np.float32)
    return {'head.weight': w, 'head.bias': np.zeros(num_classes, np.float32)}


def adapt(can, num_classes=None, img_size=None, head=None):
    """The hub arrays for ``num_classes`` (head dropped or replaced) and ``img_size``.

    ``head(embed_dim, num_classes)`` makes the replacement head (default ``new_head``).
    Returns (arrays, num_classes, img_size, notes).
    """
    from convert.resize import resample_patch_pos
    arrays, notes = dict(can.arrays), []
    nc = can.num_classes if num_classes is None else num_classes
    size = can.img_size if img_size is None else img_size
    if nc < 0:
        raise ConversionError(f'--num-classes must be >= 0, got {nc}')
    if size <= 0 or size % 16:
        raise ConversionError(f'--img-size must be a positive multiple of 16, got {size}')
    if size != can.img_size:
        arrays['patch_pos'] = resample_patch_pos(arrays['patch_pos'], size // 16)
        notes.append(f'patch_pos resampled from {can.img_size} to {size} (bicubic, cls kept)')
    if nc != can.num_classes:
        arrays.pop('head.weight', None)
        arrays.pop('head.bias', None)
        if nc:
            arrays.update((head or new_head)(arrays['cls_token'].shape[-1], nc))
        notes.append(f'head {can.num_classes} -> {nc} classes' + (' (freshly initialised)' if nc else ' (removed)'))
    return arrays, nc, size, notes
