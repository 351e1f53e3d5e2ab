"""Expected keys and shapes of TNT checkpoints, written from the layout descriptions alone.

Independent of the model code, so tests can check the models against it and the
converters can recognise a checkpoint's variant from its shapes.
"""
from tnt_common.variants import VARIANTS

PATCH = 16
WORDS = 16  # a 4x4 grid of words per 16x16 patch


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


def timm_shapes(name, num_classes=1000, img_size=None):
    """``{key: shape}`` of a timm state dict of variant ``name``."""
    v = VARIANTS[name]
    D, C, legacy = v['embed_dim'], v['inner_dim'], v['legacy']
    n = ((img_size or v['img_size']) // PATCH) ** 2
    shapes = {
        'cls_token': (1, 1, D),
        'patch_pos': (1, n + 1, D),
        'pixel_pos': (1, C, 4, 4),
        'pixel_embed.proj.weight': (C, 3, 7, 7),
        'pixel_embed.proj.bias': (C,),
        **_norm('norm1_proj', WORDS * C),
        **_linear('proj', WORDS * C, D),
        **_norm('norm2_proj', D),
    }
    for i in range(v['depth']):
        b = f'blocks.{i}'
        shapes.update(_norm(f'{b}.norm_in', C))
        shapes.update(_attention(f'{b}.attn_in', C))
        shapes.update(_norm(f'{b}.norm_mlp_in', C))
        shapes.update(_mlp(f'{b}.mlp_in', C, 4 * C))
        shapes.update(_norm(f'{b}.norm1_proj', C if legacy else WORDS * C))
        shapes.update(_linear(f'{b}.proj', WORDS * C, D, bias=legacy))
        if not legacy:
            shapes.update(_norm(f'{b}.norm2_proj', D))
        shapes.update(_norm(f'{b}.norm_out', D))
        shapes.update(_attention(f'{b}.attn_out', D))
        shapes.update(_norm(f'{b}.norm_mlp', D))
        shapes.update(_mlp(f'{b}.mlp', D, 4 * D))
    shapes.update(_norm('norm', D))
    if num_classes > 0:
        shapes.update(_linear('head', D, num_classes))
    return shapes


def _ms_norm(prefix, dim):
    return {f'{prefix}.gamma': (dim,), f'{prefix}.beta': (dim,)}


def _official_block(b, C, D, hidden, ms, zoo):
    """One official-layout block (MindCV: MindSpore norm names; zoo: also q/k apart, fewer biases)."""
    norm = _ms_norm if ms else _norm
    out = {}
    for side, dim, mlp_hidden in (('inner', C, 4 * C), ('outer', D, hidden)):
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
            out.update(norm(f'{b}.proj_norm1', WORDS * C))
            out.update(_linear(f'{b}.proj', WORDS * C, D, bias=False))
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
    D, C = v['embed_dim'], v['inner_dim']
    n = ((img_size or v['img_size']) // PATCH) ** 2
    shapes = {
        'cls_token': (1, 1, D),
        'outer_pos': (1, n + 1, D),
        'inner_pos': (1, WORDS, C),
        'patch_embed.proj.weight': (C, 3, 7, 7),
        **({} if zoo else {'patch_embed.proj.bias': (C,)}),
        **norm('proj_norm1', WORDS * C),
        **_linear('proj', WORDS * C, D, bias=not zoo),
        **norm('proj_norm2_tnt' if zoo else 'proj_norm2', D),
    }
    if not ms:
        shapes['outer_tokens'] = (1, n, D)
    for i in range(v['depth']):
        shapes.update(_official_block(f'blocks.{i}', C, D, 4 * D, ms, zoo))
    shapes.update(norm('norm', D))
    if num_classes > 0:
        shapes.update(_linear('head', D, num_classes, bias=not zoo))
    return shapes


def _mm_transformer(prefix, dim):
    return {**_norm(f'{prefix}.norm_attn', dim),
            f'{prefix}.attn.attn.in_proj_weight': (3 * dim, dim),
            **_linear(f'{prefix}.attn.attn.out_proj', dim, dim),
            **_norm(f'{prefix}.norm_ffn', dim),
            **_linear(f'{prefix}.ffn.layers.0.0', dim, 4 * dim),
            **_linear(f'{prefix}.ffn.layers.1', 4 * dim, dim)}


def mmpretrain_shapes(name, num_classes=1000, img_size=None):
    """``{key: shape}`` of an mmpretrain ``ImageClassifier`` state dict of ``name`` (legacy graph)."""
    v = VARIANTS[name]
    if not v['legacy']:
        raise ValueError(f'{name} is the official graph; mmpretrain holds only the legacy one')
    D, C = v['embed_dim'], v['inner_dim']
    n = ((img_size or v['img_size']) // PATCH) ** 2
    shapes = {
        'backbone.cls_token': (1, 1, D),
        'backbone.patch_pos': (1, n + 1, D),
        'backbone.pixel_pos': (1, C, 4, 4),
        'backbone.pixel_embed.proj.weight': (C, 3, 7, 7),
        'backbone.pixel_embed.proj.bias': (C,),
        **_norm('backbone.norm1_proj', WORDS * C),
        **_linear('backbone.projection', WORDS * C, D),
        **_norm('backbone.norm2_proj', D),
    }
    for i in range(v['depth']):
        b = f'backbone.layers.{i}'
        shapes.update(_mm_transformer(f'{b}.inner_block', C))
        shapes.update(_norm(f'{b}.norm_proj', C))
        shapes.update(_linear(f'{b}.projection', WORDS * C, D))
        shapes.update(_mm_transformer(f'{b}.outer_block', D))
    shapes.update(_norm('backbone.norm', D))
    if num_classes > 0:
        shapes.update(_linear('head.fc', D, num_classes))
    return shapes


def stored_shapes(layout, name, num_classes=1000, img_size=None):
    """``{key: shape}`` a ``layout`` file of variant ``name`` holds, MindSpore names where it has them."""
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
    """Architecture facts readable from timm-named shapes: dims, depth, legacy, classes, size."""
    blocks = {k.split('.')[1] for k in shapes if k.startswith('blocks.')}
    D = shapes['cls_token'][-1] if 'cls_token' in shapes else None
    C = shapes['pixel_pos'][1] if 'pixel_pos' in shapes else None
    n = shapes['patch_pos'][1] - 1 if 'patch_pos' in shapes else None
    grid = int(round(n ** 0.5)) if n else None
    return dict(
        embed_dim=D, inner_dim=C, depth=len(blocks),
        legacy='blocks.0.norm2_proj.weight' not in shapes and 'blocks.0.proj.bias' in shapes,
        num_classes=shapes['head.weight'][0] if 'head.weight' in shapes else 0,
        img_size=grid * PATCH if grid and grid * grid == n else None)


def matching_variants(shapes):
    """Variants whose timm layout (at the checkpoint's classes and input size) has exactly
    these keys and shapes."""
    facts = describe(shapes)
    if facts['img_size'] is None:
        return []
    got = {k: tuple(s) for k, s in shapes.items()}
    return [name for name in sorted(VARIANTS)
            if timm_shapes(name, facts['num_classes'], facts['img_size']) == got]
