"""Expected keys and shapes of TNT checkpoints, written from the layout descriptions alone.

Independent of the model code, so tests can check the models against it and the
converters can recognise a checkpoint's variant from its shapes. Every size comes from
the variant's entry (dims, ``patch_size``, ``first_stride``, ``mlp_ratio``) and the facts
of ``tnt_common.architecture``.
"""
import math

from tnt_common import pyramid
from tnt_common.architecture import INNER_MLP_RATIO, PIXEL_KERNEL, word_side
from tnt_common.variants import PYRAMID_VARIANTS, VARIANTS, family


def _linear(prefix, n_in, n_out, bias=True):
    out = {f'{prefix}.weight': (n_out, n_in)}
    if bias:
        out[f'{prefix}.bias'] = (n_out,)
    return out


def _norm(prefix, dim):
    return {f'{prefix}.weight': (dim,), f'{prefix}.bias': (dim,)}


def _attention(prefix, dim):
    return {**_linear(f'{prefix}.qk', dim, 2 * dim, bias=False),
            **_linear(f'{prefix}.v', dim, dim, bias=False),
            **_linear(f'{prefix}.proj', dim, dim)}


def _mlp(prefix, dim, hidden):
    return {**_linear(f'{prefix}.fc1', dim, hidden), **_linear(f'{prefix}.fc2', hidden, dim)}


def _dims(v, img_size):
    """(D, C, patches, words per side, outer MLP hidden) of variant entry ``v`` at ``img_size``
    (None: the variant's own)."""
    n = ((img_size or v['img_size']) // v['patch_size']) ** 2
    return (v['embed_dim'], v['inner_dim'], n, word_side(v['patch_size'], v['first_stride']),
            int(v['embed_dim'] * v['mlp_ratio']))


def _pixel_kernel(C):
    return (C, 3, PIXEL_KERNEL, PIXEL_KERNEL)


def _timm_stem(prefix, proj, D, C, n, w):
    """Tokens, positions and pixel embedding as timm (and mmpretrain, under ``backbone.``) name them."""
    return {
        f'{prefix}cls_token': (1, 1, D),
        f'{prefix}patch_pos': (1, n + 1, D),
        f'{prefix}pixel_pos': (1, C, w, w),
        f'{prefix}pixel_embed.proj.weight': _pixel_kernel(C),
        f'{prefix}pixel_embed.proj.bias': (C,),
        **_norm(f'{prefix}norm1_proj', w * w * C),
        **_linear(f'{prefix}{proj}', w * w * C, D),
        **_norm(f'{prefix}norm2_proj', D),
    }


def timm_shapes(name, num_classes=1000, img_size=None):
    """``{key: shape}`` of a timm state dict of variant ``name``."""
    v = VARIANTS[name]
    D, C, n, w, hidden = _dims(v, img_size)
    words, legacy = w * w, v['legacy']
    shapes = _timm_stem('', 'proj', D, C, n, w)
    for i in range(v['depth']):
        b = f'blocks.{i}'
        shapes.update(_norm(f'{b}.norm_in', C))
        shapes.update(_attention(f'{b}.attn_in', C))
        shapes.update(_norm(f'{b}.norm_mlp_in', C))
        shapes.update(_mlp(f'{b}.mlp_in', C, INNER_MLP_RATIO * C))
        shapes.update(_norm(f'{b}.norm1_proj', C if legacy else words * C))
        shapes.update(_linear(f'{b}.proj', words * C, D, bias=legacy))
        if not legacy:
            shapes.update(_norm(f'{b}.norm2_proj', D))
        shapes.update(_norm(f'{b}.norm_out', D))
        shapes.update(_attention(f'{b}.attn_out', D))
        shapes.update(_norm(f'{b}.norm_mlp', D))
        shapes.update(_mlp(f'{b}.mlp', D, hidden))
    shapes.update(_norm('norm', D))
    if num_classes > 0:
        shapes.update(_linear('head', D, num_classes))
    return shapes


def _ms_norm(prefix, dim):
    return {f'{prefix}.gamma': (dim,), f'{prefix}.beta': (dim,)}


def _official_block(b, C, D, words, hidden, ms, zoo):
    """One official-layout block (MindCV: MindSpore norm names; zoo: also q/k apart, fewer biases)."""
    norm = _ms_norm if ms else _norm
    out = {}
    for side, dim, mlp_hidden in (('inner', C, INNER_MLP_RATIO * C), ('outer', D, hidden)):
        attn = f'{b}.{side}_attn'
        out.update(norm(f'{b}.{side}_norm1', dim))
        if zoo:
            out.update({f'{attn}.q.weight': (dim, dim), f'{attn}.k.weight': (dim, dim)})
        else:
            out.update(_linear(f'{attn}.qk', dim, 2 * dim, bias=False))
        out.update(_linear(f'{attn}.v', dim, dim, bias=False))
        out.update(_linear(f'{attn}.proj', dim, dim, bias=not zoo))
        out.update(norm(f'{b}.{side}_norm2', dim))
        out.update(_linear(f'{b}.{side}_mlp.fc1', dim, mlp_hidden))
        out.update(_linear(f'{b}.{side}_mlp.fc2', mlp_hidden, dim, bias=not zoo))
        if side == 'inner':
            out.update(norm(f'{b}.proj_norm1', words * C))
            out.update(_linear(f'{b}.proj', words * C, D, bias=False))
            out.update(norm(f'{b}.proj_norm2', D))
    return out


def official_shapes(name, num_classes=1000, img_size=None, family='official'):
    """``{key: shape}`` of a ``family`` checkpoint ('official', 'mindcv' or 'zoo') of ``name``.

    Official Huawei PyTorch names; MindCV writes them with MindSpore's LayerNorm names and no
    ``outer_tokens``; the model zoo also keeps q and k apart, names the stem's second norm
    ``proj_norm2_tnt`` and has no bias in attention ``proj``, ``fc2``, the stem and the head.
    """
    v = VARIANTS[name]
    if v['legacy']:
        raise ValueError(f'{name} is the legacy graph; the {family} layout holds only the official one')
    ms, zoo = family in ('mindcv', 'zoo'), family == 'zoo'
    norm = _ms_norm if ms else _norm
    D, C, n, w, hidden = _dims(v, img_size)
    words = w * w
    shapes = {
        'cls_token': (1, 1, D),
        'outer_pos': (1, n + 1, D),
        'inner_pos': (1, words, C),
        'patch_embed.proj.weight': _pixel_kernel(C),
        **({} if zoo else {'patch_embed.proj.bias': (C,)}),
        **norm('proj_norm1', words * C),
        **_linear('proj', words * C, D, bias=not zoo),
        **norm('proj_norm2_tnt' if zoo else 'proj_norm2', D),
    }
    if not ms:
        shapes['outer_tokens'] = (1, n, D)
    for i in range(v['depth']):
        shapes.update(_official_block(f'blocks.{i}', C, D, words, hidden, ms, zoo))
    shapes.update(norm('norm', D))
    if num_classes > 0:
        shapes.update(_linear('head', D, num_classes, bias=not zoo))
    return shapes


def _mm_transformer(prefix, dim, hidden):
    return {**_norm(f'{prefix}.norm_attn', dim),
            f'{prefix}.attn.attn.in_proj_weight': (3 * dim, dim),
            **_linear(f'{prefix}.attn.attn.out_proj', dim, dim),
            **_norm(f'{prefix}.norm_ffn', dim),
            **_linear(f'{prefix}.ffn.layers.0.0', dim, hidden),
            **_linear(f'{prefix}.ffn.layers.1', hidden, dim)}


def mmpretrain_shapes(name, num_classes=1000, img_size=None):
    """``{key: shape}`` of an mmpretrain ``ImageClassifier`` state dict of ``name`` (legacy graph)."""
    v = VARIANTS[name]
    if not v['legacy']:
        raise ValueError(f'{name} is the official graph; mmpretrain holds only the legacy one')
    D, C, n, w, hidden = _dims(v, img_size)
    words = w * w
    shapes = _timm_stem('backbone.', 'projection', D, C, n, w)
    for i in range(v['depth']):
        b = f'backbone.layers.{i}'
        shapes.update(_mm_transformer(f'{b}.inner_block', C, INNER_MLP_RATIO * C))
        shapes.update(_norm(f'{b}.norm_proj', C))
        shapes.update(_linear(f'{b}.projection', words * C, D))
        shapes.update(_mm_transformer(f'{b}.outer_block', D, hidden))
    shapes.update(_norm('backbone.norm', D))
    if num_classes > 0:
        shapes.update(_linear('head.fc', D, num_classes))
    return shapes


def _bn(prefix, dim, mindspore):
    names = ('gamma', 'beta', 'moving_mean', 'moving_variance') if mindspore else \
        ('weight', 'bias', 'running_mean', 'running_var')
    out = {f'{prefix}.{n}': (dim,) for n in names}
    if not mindspore:
        out[f'{prefix}.num_batches_tracked'] = ()
    return out


def _conv3(prefix, n_in, n_out):
    k = pyramid.CONV_KERNEL
    return {f'{prefix}.weight': (n_out, n_in, k, k), f'{prefix}.bias': (n_out,)}


def _pyramid_attention(prefix, dim, sr_ratio, norm):
    out = {**_linear(f'{prefix}.q', dim, dim, bias=False), **_linear(f'{prefix}.kv', dim, 2 * dim, bias=False),
           **_linear(f'{prefix}.proj', dim, dim)}
    if sr_ratio > 1:
        out.update({**_linear(f'{prefix}.linear', dim, dim), **norm(f'{prefix}.norm', dim)})
    return out


def pyramid_shapes(name, num_classes=1000, img_size=None, mindspore=False):
    """``{key: shape}`` of an official PyramidTNT state dict of ``name`` (BatchNorm running
    statistics and ``num_batches_tracked`` included), or with ``mindspore`` the parameters of
    ``mindspore_tnt.ptnt`` (``gamma``/``beta``, ``moving_mean``/``moving_variance``, no counters)."""
    v = PYRAMID_VARIANTS[name]
    norm = _ms_norm if mindspore else _norm
    D, C = pyramid.stage_dims(v['outer_dim']), pyramid.stage_dims(v['inner_dim'])
    heads = pyramid.stage_dims(v['outer_heads'])
    sides = pyramid.grid_sides(img_size or v['img_size'])
    words = pyramid.NUM_WORDS
    shapes = {'outer_pos': (1, sides[0] ** 2, D[0]), 'inner_pos': (1, words, C[0])}
    index = {}
    for branch, n_in, n_out, _, _ in pyramid.stem_layers(3, C[0], D[0]):  # (conv, BatchNorm, ReLU) triples
        i = index.get(branch, 0)
        index[branch] = i + 3
        shapes.update({**_conv3(f'patch_embed.{branch}.{i}', n_in, n_out),
                       **_bn(f'patch_embed.{branch}.{i + 1}', n_out, mindspore)})
    for s in range(1, len(D)):
        for merge, dims in (('word_merges', C), ('sentence_merges', D)):
            shapes.update({**norm(f'{merge}.{s - 1}.norm', dims[s - 1]),
                           **_conv3(f'{merge}.{s - 1}.conv.0', dims[s - 1], dims[s])})
    for s, depth in enumerate(v['depths']):
        n, sr = sides[s] ** 2, pyramid.SR_RATIOS[s]
        shapes[f'stages.{s}.relative_pos'] = (1, heads[s], n, n // sr ** 2)
        for j in range(depth):
            b = f'stages.{s}.blocks.{j}'
            if pyramid.has_inner(j, depth):
                shapes.update({**norm(f'{b}.inner_norm1', words * C[s]),
                               **_pyramid_attention(f'{b}.inner_attn', C[s], 1, norm),
                               **norm(f'{b}.inner_norm2', words * C[s]),
                               **_mlp(f'{b}.inner_mlp', C[s], pyramid.MLP_RATIO * C[s]),
                               **norm(f'{b}.proj_norm1', words * C[s]),
                               **_linear(f'{b}.proj', words * C[s], D[s], bias=False),
                               **norm(f'{b}.proj_norm2', D[s])})
            shapes.update({**norm(f'{b}.outer_norm1', D[s]),
                           **_pyramid_attention(f'{b}.outer_attn', D[s], sr, norm),
                           **norm(f'{b}.outer_norm2', D[s]),
                           **_mlp(f'{b}.outer_mlp', D[s], pyramid.MLP_RATIO * D[s])})
    shapes.update(norm('norm', D[-1]))
    if num_classes > 0:
        shapes.update(_linear('head', D[-1], num_classes))
    return shapes


def stored_shapes(layout, name, num_classes=1000, img_size=None):
    """``{key: shape}`` a ``layout`` file of variant ``name`` holds, MindSpore names where it has them."""
    if family(name) == 'ptnt':
        return pyramid_shapes(name, num_classes, img_size, mindspore=layout == 'mindspore')
    if layout in ('official', 'mindcv', 'zoo'):
        return official_shapes(name, num_classes, img_size, layout)
    if layout == 'mmpretrain':
        return mmpretrain_shapes(name, num_classes, img_size)
    shapes = timm_shapes(name, num_classes, img_size)
    if layout == 'mindspore':
        shapes = {_mindspore_name(k): s for k, s in shapes.items()}
    return shapes


def _mindspore_name(key):
    module, _, leaf = key.rpartition('.')
    if 'norm' in module.rpartition('.')[2]:
        return f'{module}.' + {'weight': 'gamma', 'bias': 'beta'}[leaf]
    return key


def describe(shapes):
    """Architecture facts readable from timm-named shapes: dims, depth, legacy, classes, and
    ``grid``, the patches along each side (None unless ``patch_pos`` holds 1 + a square)."""
    def dim(key, axis):
        shape = shapes.get(key, ())
        return shape[axis] if len(shape) == 3 + (key == 'pixel_pos') else None

    blocks = {k.split('.')[1] for k in shapes if k.startswith('blocks.')}
    D, C = dim('cls_token', -1), dim('pixel_pos', 1)
    n = dim('patch_pos', 1) and dim('patch_pos', 1) - 1
    grid = math.isqrt(n) if n and n > 0 else None
    return dict(
        embed_dim=D, inner_dim=C, depth=len(blocks),
        legacy='blocks.0.norm2_proj.weight' not in shapes and 'blocks.0.proj.bias' in shapes,
        num_classes=shapes['head.weight'][0] if 'head.weight' in shapes else 0,
        grid=grid if grid and grid * grid == n else None)


def input_size(name, grid):
    """Input size of variant ``name`` with ``grid`` patches along each side."""
    return grid * VARIANTS[name]['patch_size']


def matching_variants(shapes):
    """Variants whose timm layout (at the checkpoint's classes, and the input size its patch
    grid means at the variant's own patch size) has exactly these keys and shapes."""
    facts = describe(shapes)
    if facts['grid'] is None:
        return []
    got = {k: tuple(s) for k, s in shapes.items()}
    return [name for name in sorted(VARIANTS)
            if timm_shapes(name, facts['num_classes'], input_size(name, facts['grid'])) == got]
