"""The declarative key map between checkpoint layouts; both directions use the same rules.

A rule is a pair of templates, ``(left, right)``. ``{ln}`` stands for a LayerNorm module
path (its last component starts with ``norm``), ``{i}`` for a block index and ``{rest}``
for any dotted tail. ``KeyMap.forward`` maps left names to right names, ``backward`` the
reverse; a name no rule matches is kept as it is. Templates match whole names, so a rule
for ``blocks.{i}.mlp.`` never touches ``blocks.{i}.mlp_in.``, nor a block ``proj`` the
top-level one.

Besides renames, this module declares the value transforms, dropped tensors and wrappers
of each layout, so every fact about checkpoint names lives here.
"""
import re

import numpy as np

_PLACEHOLDERS = {
    'ln': r'(?:[^.]+\.)*norm[^.]*',
    'i': r'\d+',
    'rest': r'.+',
}


def _regex(template):
    parts = re.split(r'\{(\w+)\}', template)
    out = []
    for n, part in enumerate(parts):
        out.append(f'(?P<{part}>{_PLACEHOLDERS[part]})' if n % 2 else re.escape(part))
    return re.compile(''.join(out))


class KeyMap:
    """Ordered renaming rules between two layouts; the first matching rule wins."""

    def __init__(self, rules):
        self.rules = tuple(rules)
        self._left = [(_regex(a), b) for a, b in self.rules]
        self._right = [(_regex(b), a) for a, b in self.rules]

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


# timm (PyTorch) names <-> mindspore_tnt parameter names.
TIMM_TO_MINDSPORE = KeyMap([
    ('{ln}.weight', '{ln}.gamma'),
    ('{ln}.bias', '{ln}.beta'),
])


# Official Huawei PyTorch names <-> timm names (DESIGN.md section 3).
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


def _inner_pos_to_pixel_pos(a):
    """``inner_pos (1, 16, C)`` (word h*4+w) -> ``pixel_pos (1, C, 4, 4)``."""
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

# Names that only the official layout has (any one identifies it).
OFFICIAL_MARKERS = ('outer_pos', 'inner_pos', 'outer_tokens', 'patch_embed.proj.weight')

# Torch checkpoint wrappers: the state dict sits under one of these keys.
STATE_DICT_KEYS = ('state_dict', 'model')
EMA_STATE_DICT_KEYS = ('state_dict_ema', 'model_ema')

# Prefixes stripped when every key carries one: DDP (``module.``) and MindSpore loss or
# train wrappers (``model.``).
WRAPPER_PREFIXES = ('module.', 'model.')

# First name components of a TNT's weights in any layout (timm, official, model zoo). A
# MindSpore training checkpoint stores everything flat: its keys are grouped by what
# precedes the first such component ('' or ``model.``: the weights, ``ema.``: the EMA
# weights, ``exp_avg.`` etc.: optimizer slots); keys without one are counters and the like.
TNT_ROOTS = ('cls_token', 'patch_pos', 'pixel_pos', 'pixel_embed', 'norm1_proj', 'proj',
             'norm2_proj', 'blocks', 'norm', 'head',
             'outer_pos', 'inner_pos', 'outer_tokens', 'patch_embed', 'proj_norm1', 'proj_norm2',
             'proj_norm2_tnt')
EMA_PREFIX = 'ema.'

# The MindSpore model zoo TNT (research/cv/TNT): separate q and k projections and its own
# top-level norm name. Any of these keys identifies it.
ZOO_MARKERS = (r'blocks\.\d+\.(inner|outer)_attn\.q\.weight', r'proj_norm2_tnt\.\w+')
