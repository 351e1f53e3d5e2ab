"""The declarative key maps between checkpoint layouts; both directions use the same rules.

A rule is a pair of templates, ``(left, right)``. ``{ln}`` stands for a LayerNorm module
path (its last component contains ``norm``), ``{i}`` for a block index, ``{attn}`` and
``{mlp}`` for a block's inner or outer attention / MLP, ``{rest}`` for any dotted tail.
``KeyMap.forward`` maps left names to right names, ``backward`` the reverse; a name no
rule matches is kept as it is. Templates match whole names, so a rule for
``blocks.{i}.mlp.`` never touches ``blocks.{i}.mlp_in.``, nor a block ``proj`` the
top-level one.

Each ``Layout`` below declares one family of stored checkpoints (docs/convert.md,
"Families") against timm's names, which every conversion passes through: its renames
(stored -> timm, left to right), tensors split or fused by rows, biases it lacks, value
transforms, tensors only it has, which graph and which numerics its own code runs.
Readers and writers both run from these declarations, so every fact about checkpoint
names lives here.
"""
import re
from dataclasses import dataclass, field

import numpy as np

from convert.errors import ConversionError

_PLACEHOLDERS = {
    'ln': r'(?:[^.]+\.)*[^.]*norm[^.]*',
    'i': r'\d+',
    'attn': r'attn_in|attn_out',
    'mlp': r'mlp_in|mlp',
    'rest': r'.+',
    # a BatchNorm of PyramidTNT's stem: the second of each (conv, BatchNorm, ReLU) triple
    'bn': r'patch_embed\.(?:common_conv|inner_convs|outer_convs)\.[147]',
}


def template_regex(template):
    """The compiled regex of a rule template, one named group per placeholder."""
    parts = re.split(r'\{(\w+)\}', template)
    out = []
    for n, part in enumerate(parts):
        out.append(f'(?P<{part}>{_PLACEHOLDERS[part]})' if n % 2 else re.escape(part))
    return re.compile(''.join(out))


class KeyMap:
    """Ordered renaming rules between two layouts; the first matching rule wins.

    ``left_only``: templates of left names without a counterpart on the right (``drops``).
    """

    def __init__(self, rules, left_only=()):
        self.rules = tuple(rules)
        self.left_only = tuple(left_only)
        self._left = [(template_regex(a), b) for a, b in self.rules]
        self._right = [(template_regex(b), a) for a, b in self.rules]
        self._left_only = [template_regex(t) for t in self.left_only]

    def drops(self, key):
        """Whether the left name ``key`` has no counterpart on the right."""
        return any(regex.fullmatch(key) for regex in self._left_only)

    @staticmethod
    def _apply(compiled, key):
        for regex, template in compiled:
            m = regex.fullmatch(key)
            if m:
                return template.format(**m.groupdict())
        return key

    def forward(self, key):
        return self._apply(self._left, key)

    def backward(self, key):
        return self._apply(self._right, key)


def one_to_one(renamed):
    """``{name: value}`` of ``(stored name, name, value)`` triples; two stored names that map to one
    name are refused (neither could be told the right one)."""
    out, stored_as = {}, {}
    for stored, name, value in renamed:
        if name in out:
            raise ConversionError(f'{stored_as[name]} and {stored} both map to {name}')
        out[name], stored_as[name] = value, stored
    return out


# MindSpore parameter names (LayerNorm gamma/beta) <-> torch names.
MINDSPORE_NAMES = KeyMap([
    ('{ln}.gamma', '{ln}.weight'),
    ('{ln}.beta', '{ln}.bias'),
])

# timm (PyTorch) names <-> mindspore_tnt parameter names.
TIMM_TO_MINDSPORE = KeyMap([(b, a) for a, b in MINDSPORE_NAMES.rules])

# PyramidTNT's torch-only tensors: template -> (the tensor each instance sits beside, the
# value written). BatchNorm's update counter is read only with momentum=None, so at the
# fixed momentum 0.1 no forward pass uses it; converted torch files get 0, a fresh model's.
PYRAMID_TORCH_ONLY = {'{bn}.num_batches_tracked': ('{bn}.running_mean', 0)}

# PyramidTNT: official torch names <-> mindspore_tnt.ptnt parameter names. The stem's
# BatchNorms keep their statistics as MindSpore parameters; torch's ``num_batches_tracked``
# has no counterpart (momentum is fixed).
PYRAMID_TO_MINDSPORE = KeyMap([
    ('{bn}.weight', '{bn}.gamma'),
    ('{bn}.bias', '{bn}.beta'),
    ('{bn}.running_mean', '{bn}.moving_mean'),
    ('{bn}.running_var', '{bn}.moving_variance'),
    ('{ln}.weight', '{ln}.gamma'),
    ('{ln}.bias', '{ln}.beta'),
], left_only=tuple(PYRAMID_TORCH_ONLY))

# PyramidTNT's stored layouts (a subset of ``LAYOUTS``' names: official torch names, which
# ``torch_ref.ptnt`` keeps, and mindspore_tnt.ptnt's) and what reports call them; names that
# only a PyramidTNT has.
PYRAMID_LAYOUTS = {'official': 'official PyramidTNT PyTorch', 'mindspore': 'mindspore_tnt.ptnt (MindSpore names)'}
PYRAMID_MARKER = r'stages\.\d+\.relative_pos|(?:word|sentence)_merges\.\d+\..+'


# Official Huawei PyTorch names <-> timm names (docs/convert.md, "Families").
OFFICIAL_TO_TIMM = KeyMap([
    ('patch_embed.{rest}', 'pixel_embed.{rest}'),
    ('outer_pos', 'patch_pos'),
    ('inner_pos', 'pixel_pos'),
    ('proj_norm1.{rest}', 'norm1_proj.{rest}'),
    ('proj_norm2.{rest}', 'norm2_proj.{rest}'),
    ('blocks.{i}.proj_norm1.{rest}', 'blocks.{i}.norm1_proj.{rest}'),
    ('blocks.{i}.proj_norm2.{rest}', 'blocks.{i}.norm2_proj.{rest}'),
    ('blocks.{i}.inner_norm1.{rest}', 'blocks.{i}.norm_in.{rest}'),
    ('blocks.{i}.inner_attn.{rest}', 'blocks.{i}.attn_in.{rest}'),
    ('blocks.{i}.inner_norm2.{rest}', 'blocks.{i}.norm_mlp_in.{rest}'),
    ('blocks.{i}.inner_mlp.{rest}', 'blocks.{i}.mlp_in.{rest}'),
    ('blocks.{i}.outer_norm1.{rest}', 'blocks.{i}.norm_out.{rest}'),
    ('blocks.{i}.outer_attn.{rest}', 'blocks.{i}.attn_out.{rest}'),
    ('blocks.{i}.outer_norm2.{rest}', 'blocks.{i}.norm_mlp.{rest}'),
    ('blocks.{i}.outer_mlp.{rest}', 'blocks.{i}.mlp.{rest}'),
])

# The MindSpore model zoo names the stem's second norm apart (then as the official code).
ZOO_NAMES = KeyMap([('proj_norm2_tnt.{rest}', 'proj_norm2.{rest}')])


def _mm_block(side, timm):
    """mmpretrain ``TransformerBlock`` (``inner_block``/``outer_block``) -> timm block modules."""
    norm_attn, attn, norm_ffn, mlp = timm
    b = f'backbone.layers.{{i}}.{side}_block'
    return [
        (f'{b}.norm_attn.{{rest}}', f'blocks.{{i}}.{norm_attn}.{{rest}}'),
        (f'{b}.attn.attn.in_proj_weight', f'blocks.{{i}}.{attn}.in_proj_weight'),
        (f'{b}.attn.attn.out_proj.{{rest}}', f'blocks.{{i}}.{attn}.proj.{{rest}}'),
        (f'{b}.norm_ffn.{{rest}}', f'blocks.{{i}}.{norm_ffn}.{{rest}}'),
        (f'{b}.ffn.layers.0.0.{{rest}}', f'blocks.{{i}}.{mlp}.fc1.{{rest}}'),
        (f'{b}.ffn.layers.1.{{rest}}', f'blocks.{{i}}.{mlp}.fc2.{{rest}}'),
    ]


# mmpretrain / mmcls names <-> timm names (the legacy graph). Heads: LinearClsHead
# (``head.fc``, written) or VisionTransformerClsHead (``head.layers.head``, read).
MMPRETRAIN_TO_TIMM = KeyMap([
    ('backbone.cls_token', 'cls_token'),
    ('backbone.patch_pos', 'patch_pos'),
    ('backbone.pixel_pos', 'pixel_pos'),
    ('backbone.pixel_embed.{rest}', 'pixel_embed.{rest}'),
    ('backbone.norm1_proj.{rest}', 'norm1_proj.{rest}'),
    ('backbone.projection.{rest}', 'proj.{rest}'),
    ('backbone.norm2_proj.{rest}', 'norm2_proj.{rest}'),
    *_mm_block('inner', ('norm_in', 'attn_in', 'norm_mlp_in', 'mlp_in')),
    *_mm_block('outer', ('norm_out', 'attn_out', 'norm_mlp', 'mlp')),
    ('backbone.layers.{i}.norm_proj.{rest}', 'blocks.{i}.norm1_proj.{rest}'),
    ('backbone.layers.{i}.projection.{rest}', 'blocks.{i}.proj.{rest}'),
    ('backbone.norm.{rest}', 'norm.{rest}'),
    ('head.fc.{rest}', 'head.{rest}'),
    ('head.layers.head.{rest}', 'head.{rest}'),
])


def _inner_pos_to_pixel_pos(a):
    """``inner_pos (1, w*w, C)`` -> ``pixel_pos (1, C, w, w)``: word r*w + c is row r, column c
    of the patch's w x w word grid, w read from the shape."""
    side = int(round(a.shape[1] ** 0.5))
    return np.ascontiguousarray(a.transpose(0, 2, 1)).reshape(1, a.shape[2], side, side)


def _pixel_pos_to_inner_pos(a):
    return np.ascontiguousarray(a.reshape(1, a.shape[1], -1).transpose(0, 2, 1))


# Value transforms of the official layout, by timm name: (official -> timm, timm -> official).
OFFICIAL_VALUE_TRANSFORMS = {
    'pixel_pos': (_inner_pos_to_pixel_pos, _pixel_pos_to_inner_pos),
}

# Official tensors with no timm counterpart: dropped on reading, written as zeros
# (``outer_tokens (1, N, D)``, never used by the official forward pass).
OFFICIAL_UNUSED = {'outer_tokens': lambda timm: np.zeros_like(timm['patch_pos'][:, 1:])}

# Row groups, in timm-name space after the renames: the rows of the stored tensors, in
# order, are the rows of the timm tensors, in order; the numbers are each one's share.
# mmpretrain fuses q|k|v into ``in_proj_weight``; the zoo keeps q and k apart.
IN_PROJ_ROWS = ((('blocks.{i}.{attn}.in_proj_weight', 1),),
                (('blocks.{i}.{attn}.qk.weight', 2), ('blocks.{i}.{attn}.v.weight', 1)))
SEPARATE_QK_ROWS = ((('blocks.{i}.{attn}.q.weight', 1), ('blocks.{i}.{attn}.k.weight', 1)),
                    (('blocks.{i}.{attn}.qk.weight', 1),))

# Biases the model zoo TNT has no tensor for (timm names): exactly zeros in our models.
ZOO_ABSENT_BIASES = ('blocks.{i}.{attn}.proj.bias', 'blocks.{i}.{mlp}.fc2.bias', 'pixel_embed.proj.bias',
                     'proj.bias', 'head.bias')

# The graphs a layout can hold.
OFFICIAL_GRAPH, LEGACY_GRAPH = 'official', 'legacy'


@dataclass(frozen=True)
class Layout:
    """One family of stored checkpoints, declared against timm's names."""
    name: str
    framework: str                      # 'torch' or 'mindspore': whose files these are
    title: str                          # what the report calls it
    renames: tuple                      # KeyMaps, stored (left) -> timm (right), applied in order
    graphs: tuple = (OFFICIAL_GRAPH, LEGACY_GRAPH)
    numerics: str = None                # preset its own code runs; None: the file carries them
    row_groups: tuple = ()
    absent_biases: tuple = ()
    value_transforms: dict = field(default_factory=dict)
    unused: dict = field(default_factory=dict)


_OFFICIAL_NAMES = dict(value_transforms=OFFICIAL_VALUE_TRANSFORMS, graphs=(OFFICIAL_GRAPH,))

LAYOUTS = {layout.name: layout for layout in (
    Layout('timm', 'torch', 'timm', ()),
    Layout('mindspore', 'mindspore', 'mindspore_tnt (MindSpore names)', (MINDSPORE_NAMES,)),
    Layout('official', 'torch', 'official Huawei PyTorch', (OFFICIAL_TO_TIMM,), numerics='pytorch',
           unused=OFFICIAL_UNUSED, **_OFFICIAL_NAMES),
    Layout('mmpretrain', 'torch', 'mmpretrain (mmengine)', (MMPRETRAIN_TO_TIMM,), graphs=(LEGACY_GRAPH,),
           numerics='pytorch', row_groups=(IN_PROJ_ROWS,)),
    Layout('mindcv', 'mindspore', 'MindCV', (MINDSPORE_NAMES, OFFICIAL_TO_TIMM), numerics='mindcv',
           **_OFFICIAL_NAMES),
    Layout('zoo', 'mindspore', 'MindSpore model zoo (research/cv/TNT)', (MINDSPORE_NAMES, ZOO_NAMES, OFFICIAL_TO_TIMM),
           numerics='zoo', row_groups=(SEPARATE_QK_ROWS,), absent_biases=ZOO_ABSENT_BIASES, **_OFFICIAL_NAMES),
)}

# The layout each framework writes unless told otherwise.
DEFAULT_LAYOUT = {'torch': 'timm', 'mindspore': 'mindspore'}

# Names that identify a family (regexes over stored names, wrappers removed), checked in order.
FAMILY_MARKERS = (
    ('zoo', r'blocks\.\d+\.(inner|outer)_attn\.[qk]\.weight|proj_norm2_tnt\.\w+'),
    ('mmpretrain', r'backbone\.layers\.\d+\.(inner|outer)_block\..+'),
    ('official', r'outer_pos|inner_pos|outer_tokens|patch_embed\.proj\.\w+'),
)

# Where numerics travel in a file: a safetensors metadata key, a ``.ckpt`` string entry,
# a torch wrapper dict key.
NUMERICS_KEY = 'tnt_numerics'

# Torch checkpoint wrappers: the state dict sits under one of these keys.
STATE_DICT_KEYS = ('state_dict', 'model')
EMA_STATE_DICT_KEYS = ('state_dict_ema', 'model_ema')
MMENGINE_EMA_KEY = 'ema_state_dict'  # mmengine's: the raw weights, swapped out of state_dict at saving

# Prefixes stripped when every key carries one: DDP (``module.``), MindSpore loss or
# train wrappers (``model.``), ``torch.compile`` (``_orig_mod.``).
WRAPPER_PREFIXES = ('module.', 'model.', '_orig_mod.')

# First name components of a TNT's weights in any layout (timm, official, MindCV, model
# zoo, PyramidTNT). A MindSpore training checkpoint stores everything flat: its keys are
# grouped by what precedes the first such component ('' or ``model.``: the weights, ``ema.``: the
# EMA weights, ``adam_m.`` etc.: optimizer slots); keys without one are counters and the like.
TNT_ROOTS = ('cls_token', 'patch_pos', 'pixel_pos', 'pixel_embed', 'norm1_proj', 'proj',
             'norm2_proj', 'blocks', 'norm', 'head',
             'outer_pos', 'inner_pos', 'outer_tokens', 'patch_embed', 'proj_norm1', 'proj_norm2',
             'proj_norm2_tnt', 'stages', 'word_merges', 'sentence_merges')
EMA_PREFIX = 'ema.'
