"""Expected keys and shapes of TNT checkpoints, written from the layout description alone.

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


def describe(shapes):
    """Architecture facts readable from timm-named shapes: dims, depth, legacy, classes, size."""
    blocks = {int(k.split('.')[1]) for k in shapes if k.startswith('blocks.')}
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
