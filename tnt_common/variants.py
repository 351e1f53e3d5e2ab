"""The one table of TNT variants: architecture hyperparameters and pretrained configs.

Importable without torch or mindspore. ``torch_ref`` and ``mindspore_tnt`` build their
models from ``model_args(name)``; converters and tools read the rest.
"""

IMAGENET_INCEPTION_MEAN = (0.5, 0.5, 0.5)
IMAGENET_INCEPTION_STD = (0.5, 0.5, 0.5)

# Architecture of each registered variant. ``num_params`` is with the 1000-class head.
VARIANTS = {
    'tnt_s_patch16_224': dict(
        embed_dim=384, inner_dim=24, depth=12, num_heads_outer=6, num_heads_inner=4,
        legacy=False, img_size=224, num_params=23_768_584),
    'tnt_b_patch16_224': dict(
        embed_dim=640, inner_dim=40, depth=12, num_heads_outer=10, num_heads_inner=4,
        legacy=False, img_size=224, num_params=65_428_680),
    'tnt_s_legacy_patch16_224': dict(
        embed_dim=384, inner_dim=24, depth=12, num_heads_outer=6, num_heads_inner=4,
        legacy=True, img_size=224, num_params=23_755_336),
    # Small variant for fast tests and CPU demos: 16 * inner_dim == embed_dim, as in S and
    # B, so its block ``proj``, ``v`` and attention ``proj`` weights are square too.
    'tnt_tiny_patch16_64': dict(
        embed_dim=96, inner_dim=6, depth=4, num_heads_outer=3, num_heads_inner=2,
        legacy=False, img_size=64, num_params=596_176),
}

_ARCH_KEYS = ('embed_dim', 'inner_dim', 'depth', 'num_heads_outer', 'num_heads_inner',
              'legacy', 'img_size')


def _cfg(hub_id='', top1=None, img_size=224, **kwargs):
    return dict(
        hf_hub_id=hub_id, num_classes=1000, input_size=(3, img_size, img_size),
        crop_pct=0.9, interpolation='bicubic', mean=IMAGENET_INCEPTION_MEAN,
        std=IMAGENET_INCEPTION_STD, first_conv='pixel_embed.proj', classifier='head',
        top1=top1, **kwargs)


# Pretrained configs beside the variants (timm's hub names; top-1 as evaluated by timm).
PRETRAINED_CFGS = {
    'tnt_s_patch16_224': _cfg('timm/tnt_s_patch16_224.in1k', top1=81.506),
    'tnt_b_patch16_224': _cfg('timm/tnt_b_patch16_224.in1k', top1=82.864),
    'tnt_s_legacy_patch16_224': _cfg('timm/tnt_s_legacy_patch16_224.in1k', top1=81.512),
    'tnt_tiny_patch16_64': _cfg(img_size=64),
}


def list_models():
    """Names of all registered variants."""
    return sorted(VARIANTS)


def model_args(name):
    """Constructor arguments of variant ``name`` for ``TNT`` in either framework."""
    if name not in VARIANTS:
        raise ValueError(f"unknown TNT variant {name!r}; known: {', '.join(list_models())}")
    return {k: VARIANTS[name][k] for k in _ARCH_KEYS}


def pretrained_cfg(name):
    """Preprocessing and hub facts of variant ``name``."""
    model_args(name)
    return dict(PRETRAINED_CFGS[name])
