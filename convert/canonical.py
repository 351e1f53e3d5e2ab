"""Stored names -> the hub format ``{timm_name: array}`` and back, with family, variant, numerics.

``to_timm`` recognises the family from names (``keymap.FAMILY_MARKERS``) and the variant
from shapes (``layouts.matching_variants``); ``from_timm`` writes any family from the hub
format, refusing what that family cannot hold. Both run the declarations of ``keymap.LAYOUTS``.
"""
import re
from dataclasses import dataclass

import numpy as np

from convert import keymap
from convert.errors import ConversionError
from convert.layouts import describe, input_size, matching_variants, timm_shapes
from tnt_common import numerics as nx
from tnt_common.architecture import patch_grid
from tnt_common.strict import check_strict
from tnt_common.variants import VARIANTS, family, list_models

TNT_ANCHORS = ('cls_token', 'patch_pos', 'pixel_pos')


@dataclass
class Canonical:
    """A checkpoint in the hub format, with what was recognised about it."""
    arrays: dict
    layout: str        # a name of keymap.LAYOUTS
    variant: str
    num_classes: int
    img_size: int
    numerics: nx.Numerics
    numerics_origin: str

    @property
    def framework(self):
        return keymap.LAYOUTS[self.layout].framework

    @property
    def description(self):
        if family(self.variant) == 'ptnt':
            return keymap.PYRAMID_LAYOUTS[self.layout]
        return keymap.LAYOUTS[self.layout].title + (', legacy graph' if VARIANTS[self.variant]['legacy'] else '')


def _examples(keys, n=4):
    keys = sorted(keys)
    return ', '.join(keys[:n]) + (', ...' if len(keys) > n else '')


def detect(keys):
    """The family (``keymap.LAYOUTS`` name) of stored names ``keys``."""
    mindspore = any(k.endswith(('.gamma', '.beta')) for k in keys)
    for name, pattern in keymap.FAMILY_MARKERS:
        if any(re.fullmatch(pattern, k) for k in keys):
            return 'mindcv' if name == 'official' and mindspore else name
    return 'mindspore' if mindspore else 'timm'


def looks_like(keys):
    """What a file that holds no TNT of a known family seems to hold, in a few words."""
    def has(pattern):
        return any(re.search(pattern, k) for k in keys)
    if has(r'^encoder\.layers\.') and has(r'pixel2patch'):
        return 'the 2021 MindSpore-hub TNT (encoder.layers, pixel2patch), a different model'
    wrapped = sorted({k[:k.index(a)] for k in keys for a in ('cls_token', 'blocks.0.')
                      if a in k and not k.startswith(a) and k[k.index(a) - 1] == '.'})
    if wrapped:
        others = sorted({k.split('.')[0] + '.*' for k in keys if not k.startswith(wrapped[0])})
        return (f'a TNT inside a classifier wrapper (TNT weights under {wrapped[0]!r}'
                + (f' beside {", ".join(others[:4])}' if others else '') + '); save the TNT\'s own state dict')
    if has(r'(^|\.)blocks\.\d+\.attn\.qkv\.'):
        return 'a ViT-style transformer (blocks.N.attn.qkv), another architecture'
    if has(r'(^|\.)layer\d\.\d+\.conv\d'):
        return 'a ResNet (layerN.M.convK), another architecture'
    if has(r'^backbone\.'):
        return 'an mmpretrain classifier with another backbone (backbone.*)'
    if has(r'(^|\.)(exp_avg|exp_avg_sq|moments|adam_m|adam_v)(\.|$)'):
        return 'optimizer state, no model weights'
    return None


def _rows(arrays, src, dst):
    """Regroup rows: each instance of the ``src`` templates becomes the ``dst`` tensors."""
    first = keymap.template_regex(src[0][0])
    for key in [k for k in arrays if first.fullmatch(k)]:
        fields = first.fullmatch(key).groupdict()
        names = [t.format(**fields) for t, _ in src]
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ConversionError(f'{key} comes without {missing[0]}')
        parts = [arrays.pop(n) for n in names]
        if len({p.shape[1:] for p in parts}) > 1:
            raise ConversionError(f'{", ".join(names)} have shapes {[p.shape for p in parts]}: not one matrix')
        whole = np.concatenate(parts, axis=0)
        shares = [s for _, s in dst]
        unit, rest = divmod(whole.shape[0], sum(shares))
        if rest:
            raise ConversionError(f'{key}: {whole.shape[0]} rows do not split into {"+".join(map(str, shares))} parts')
        cuts = np.cumsum([s * unit for s in shares])[:-1]
        for (t, _), part in zip(dst, np.split(whole, cuts, axis=0)):
            name = t.format(**fields)
            if name in arrays:
                raise ConversionError(f'{name} is stored beside {", ".join(names)}, which make it')
            arrays[name] = np.ascontiguousarray(part)
    return arrays


def _absent_bias_instances(arrays, templates):
    """(bias name, rows) of every bias a family lacks, for the weights present in ``arrays``."""
    for template in templates:
        weight = keymap.template_regex(template[:-len('bias')] + 'weight')
        for k, v in arrays.items():
            m = weight.fullmatch(k)
            if m:
                yield template.format(**m.groupdict()), v.shape[0]


def _renamed(arrays, layout):
    """(stored name, timm name, value) of each array ``layout`` uses, its value transformed."""
    for stored, v in arrays.items():
        if stored in layout.unused:
            continue
        k = stored
        for renames in layout.renames:
            k = renames.forward(k)
        if k in layout.value_transforms and v.ndim == 3:
            try:
                v = layout.value_transforms[k][0](v)
            except ValueError:
                raise ConversionError(f'{stored} has shape {v.shape}: not a square grid of words') from None
        yield stored, k, v


def _read_layout(arrays, layout):
    """Stored arrays of ``layout`` -> timm names (zero biases filled in where it has none)."""
    out = keymap.one_to_one(_renamed(arrays, layout))
    for src, dst in layout.row_groups:
        out = _rows(out, src, dst)
    for name, rows in list(_absent_bias_instances(out, layout.absent_biases)):
        if name in out:
            raise ConversionError(f'{name}: present, but the {layout.title} layout has no such bias')
        out[name] = np.zeros(rows, np.float32)
    return out


def _variant(shapes, model_name):
    facts = describe(shapes)
    if model_name is not None:
        if model_name not in VARIANTS:
            raise ConversionError(f'unknown model {model_name!r}; known: {", ".join(list_models())}')
        if facts['grid'] is None:
            raise ConversionError(f'patch_pos of shape {shapes.get("patch_pos")}: not (1, 1 + a square grid, dim)')
        expected = timm_shapes(model_name, facts['num_classes'], input_size(model_name, facts['grid']))
        try:
            check_strict(expected, shapes, f'not a {model_name} checkpoint')
        except (KeyError, ValueError) as e:
            raise ConversionError(str(e.args[0])) from None
        return model_name
    found = matching_variants(shapes)
    if len(found) > 1:
        raise ConversionError(f'ambiguous: the shapes fit {", ".join(found)}; choose one with --model')
    near = [name for name, v in VARIANTS.items() if facts['grid'] is not None and
            (v['embed_dim'], v['inner_dim'], v['depth'], v['legacy']) ==
            (facts['embed_dim'], facts['inner_dim'], facts['depth'], facts['legacy'])]
    if not found and len(near) == 1:    # that variant's dims and depth: name the keys that differ
        _variant(shapes, near[0])
    if not found:
        raise ConversionError(
            f'no registered TNT variant has these keys and shapes (embed_dim {facts["embed_dim"]}, '
            f'inner_dim {facts["inner_dim"]}, depth {facts["depth"]}, legacy {facts["legacy"]}, '
            f'{len(shapes)} tensors); known: {", ".join(list_models())}; --model NAME names '
            'the missing or mismatched keys')
    return found[0]


def resolve_numerics(layout, stored, override):
    """(Numerics, where they came from): ``override``, else the file's, else the family's."""
    try:
        if override is not None:
            return nx.parse(override), 'given'
        if stored is not None:
            return nx.Numerics.from_json(stored), 'stored in the file'
    except ValueError as e:
        raise ConversionError(str(e)) from None
    preset = layout.numerics or 'pytorch'
    return nx.PRESETS[preset], f'{layout.title} default'


def to_timm(arrays, model_name=None, numerics=None, stored_numerics=None):
    """Recognise ``arrays`` (stored names) and return them as a ``Canonical``.

    ``numerics`` (a ``tnt_common.numerics`` preset, spec or ``Numerics``) overrides both
    ``stored_numerics`` (the file's own record, JSON) and the family's default.
    """
    keys = set(arrays)
    layout = keymap.LAYOUTS[detect(keys)]
    arrays = _read_layout(arrays, layout)
    if not all(a in arrays for a in TNT_ANCHORS) or not any(k.startswith('blocks.') for k in arrays):
        hint = looks_like(keys)
        raise ConversionError(f'not a TNT checkpoint: {len(keys)} tensors such as {_examples(keys)}'
                              + (f'; it looks like {hint}' if hint else
                                 f' (a TNT has {", ".join(TNT_ANCHORS)} and blocks.N.*)'))
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    variant = _variant(shapes, model_name)
    facts = describe(shapes)
    chosen, origin = resolve_numerics(layout, stored_numerics, numerics)
    return Canonical(arrays, layout.name, variant, facts['num_classes'], input_size(variant, facts['grid']),
                     chosen, origin)


def check_writable(layout_name, variant, numerics):
    """Refuse, before anything is written, a ``layout`` file that could not hold this model."""
    layout = keymap.LAYOUTS[layout_name]
    if family(variant) == 'ptnt':
        if layout_name not in keymap.PYRAMID_LAYOUTS:
            raise ConversionError(f'{variant} is a PyramidTNT; the {layout.title} layout holds TNT only: choose '
                                  f'--layout {" or ".join(keymap.PYRAMID_LAYOUTS)}')
    else:
        graph = keymap.LEGACY_GRAPH if VARIANTS[variant]['legacy'] else keymap.OFFICIAL_GRAPH
        if graph not in layout.graphs:
            raise ConversionError(f'{variant} is the {graph} graph; the {layout.title} layout holds only the '
                                  f'{layout.graphs[0]} one, so its own code would compute another model')
    if layout.numerics and nx.PRESETS[layout.numerics] != numerics:
        raise ConversionError(
            f'the {layout.title} code computes {nx.PRESETS[layout.numerics].describe()}, these weights '
            f'are for {numerics.describe()}: the file would compute another function there; '
            f'choose another --layout, or --numerics {layout.numerics} if the weights are meant for it')


def from_timm(arrays, layout_name='timm'):
    """Hub-format ``arrays`` under the stored names of ``layout_name``.

    Biases the family lacks must be zero (they are dropped); anything else is refused.
    """
    layout = keymap.LAYOUTS[layout_name]
    out = dict(arrays)
    for name, _ in list(_absent_bias_instances(out, layout.absent_biases)):
        bias = out.pop(name, None)
        if bias is not None and np.any(bias):
            raise ConversionError(f'{name} is not zero ({np.count_nonzero(bias)} of {bias.size} values): '
                                  f'the {layout.title} layout has no such bias and would lose it')
    for stored, timm in layout.row_groups:
        out = _rows(out, timm, stored)
    written = {}
    for k, v in out.items():
        if k in layout.value_transforms:
            v = layout.value_transforms[k][1](v)
        for renames in reversed(layout.renames):
            k = renames.backward(k)
        written[k] = v
    written.update({k: make(arrays) for k, make in layout.unused.items()})
    return written


def check_finite(arrays):
    """Refuse weights that are not floating point, and NaN or Inf: such weights come from a
    diverged run and would spread silently.

    A sum holding a NaN or an Inf is never finite, so a finite sum clears a tensor in one
    pass; only a non-finite sum is examined element by element.
    """
    for k, v in arrays.items():
        if v.dtype.kind != 'f':
            raise ConversionError(f'{k} holds {v.dtype} values, not floating-point weights')
        with np.errstate(over='ignore'):   # finite values can sum past the largest float: examined then
            quick = not np.isfinite(np.sum(v))
        if quick and not np.isfinite(v).all():
            bad = int(np.size(v) - np.count_nonzero(np.isfinite(v)))
            raise ConversionError(f'{k} holds {bad} NaN/Inf values: refusing to convert a broken checkpoint')


def new_head(embed_dim, num_classes, seed=0):
    """A fresh classifier as the models initialise it: trunc-normal(0.02, +-2) weight, zero bias."""
    rng = np.random.default_rng(seed)
    w = np.clip(rng.normal(0., 0.02, (num_classes, embed_dim)), -2., 2.).astype(np.float32)
    return {'head.weight': w, 'head.bias': np.zeros(num_classes, np.float32)}


def check_img_size(can, img_size):
    """Patches along a side of an ``img_size`` (``--img-size``) input to ``can``'s variant;
    ConversionError unless it is a positive multiple of the patch size."""
    patch = VARIANTS[can.variant]['patch_size']
    try:
        return patch_grid(img_size, patch)
    except ValueError:
        raise ConversionError(f'--img-size {img_size} is not a positive multiple of the patch size {patch} '
                              f'of {can.variant}') from None


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
    grid = check_img_size(can, size)
    if size != can.img_size:
        arrays['patch_pos'] = resample_patch_pos(arrays['patch_pos'], grid)
        notes.append(f'patch_pos resampled from {can.img_size} to {size} (bicubic antialiased as timm, cls kept)')
    if nc != can.num_classes:
        arrays.pop('head.weight', None)
        arrays.pop('head.bias', None)
        if nc:
            arrays.update((head or new_head)(arrays['cls_token'].shape[-1], nc))
        notes.append(f'head {can.num_classes} -> {nc} classes' + (' (freshly initialised)' if nc else ' (removed)'))
    return arrays, nc, size, notes
