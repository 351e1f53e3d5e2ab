"""The one table of TNT variants: architecture hyperparameters and pretrained configs.

Importable without torch or mindspore. ``torch_ref`` and ``mindspore_tnt`` build their
models from ``model_args(name)``, take names as timm does (``split_tag``) and select blocks
for ``forward_intermediates`` with ``feature_take_indices``; converters and tools read the rest.

Two families, each with its rows and configs: ``'tnt'`` (``VARIANTS``, ``PRETRAINED_CFGS``;
the ``TNT`` models, what converters, training, tools and benchmarks take) and ``'ptnt'``
(``PYRAMID_VARIANTS``, ``PYRAMID_PRETRAINED_CFGS``; the ``PyramidTNT`` models of
``ptnt.py``). ``list_models()`` lists TNT, ``list_models('ptnt')`` PyramidTNT;
``model_args``, ``split_tag`` and ``pretrained_cfg`` take a name of either (``family``).
"""
import fnmatch

IMAGENET_INCEPTION_MEAN = (0.5, 0.5, 0.5)
IMAGENET_INCEPTION_STD = (0.5, 0.5, 0.5)
CROP_PCT = 0.9

# Architecture of each registered variant: dims, depth, heads, the patch geometry
# (``patch_size`` pixels per patch side, the pixel embedding's ``first_stride``: together the
# word grid, ``tnt_common.architecture.word_side``), the outer MLP's ``mlp_ratio``, the graph
# and the default input size. ``num_params`` is with the 1000-class head.
_ARCH_KEYS = ('embed_dim', 'inner_dim', 'depth', 'num_heads_outer', 'num_heads_inner',
              'patch_size', 'first_stride', 'mlp_ratio', 'legacy', 'img_size')
VARIANTS = {name: dict(zip(_ARCH_KEYS + ('num_params',), row)) for name, row in {
    #                          dim  inner depth heads    patch stride mlp  legacy  img  num_params
    'tnt_s_patch16_224':        (384, 24, 12, 6, 4,      16, 4, 4.,        False, 224, 23_768_584),
    'tnt_b_patch16_224':        (640, 40, 12, 10, 4,     16, 4, 4.,        False, 224, 65_428_680),
    'tnt_s_legacy_patch16_224': (384, 24, 12, 6, 4,      16, 4, 4.,        True, 224, 23_755_336),
    # Small variant for fast tests and CPU demos: words * inner_dim == embed_dim (4x4 words),
    # as in S and B, so its block ``proj``, ``v`` and attention ``proj`` weights are square too.
    'tnt_tiny_patch16_64':      (96, 6, 4, 3, 2,         16, 4, 4.,        False, 64, 596_176),
}.items()}

# PyramidTNT (official ``tnt_pytorch/pyramid_tnt.py``): stage 0's dims and heads (later
# stages scale them, ``tnt_common.pyramid.STAGE_SCALE``), blocks per stage and the input
# size; ``num_params`` with the 1000-class head, BatchNorm running statistics not counted.
_PYRAMID_KEYS = ('outer_dim', 'inner_dim', 'depths', 'outer_heads', 'inner_heads', 'img_size')
PYRAMID_VARIANTS = {name: dict(zip(_PYRAMID_KEYS + ('num_params',), row)) for name, row in {
    #                        outer inner depths     heads  img  num_params
    'ptnt_ti_patch16_192':   (80, 5, (2, 6, 3, 2),   2, 1,  192, 10_578_529),
    'ptnt_s_patch16_256':    (128, 8, (2, 8, 4, 2),  4, 2,  256, 31_953_200),
    'ptnt_m_patch16_256':    (192, 12, (2, 8, 6, 2), 4, 2,  256, 84_943_572),
    'ptnt_b_patch16_256':    (256, 16, (2, 10, 6, 2), 4, 2, 256, 156_990_072),
    # Small variant for fast tests: grids 8, 4, 2, 1; stage 1 has 7 blocks, so its second
    # block has the inner transformer too, as in S, M and B.
    'ptnt_tiny_patch16_64':  (32, 4, (2, 7, 1, 1),   2, 1,  64, 1_292_020),
}.items()}

FAMILIES = {'tnt': VARIANTS, 'ptnt': PYRAMID_VARIANTS}


def _cfg(hub_id='', top1=None, img_size=224, first_conv='pixel_embed.proj', **kwargs):
    return dict(
        hf_hub_id=hub_id, num_classes=1000, input_size=(3, img_size, img_size),
        crop_pct=CROP_PCT, interpolation='bicubic', mean=IMAGENET_INCEPTION_MEAN,
        std=IMAGENET_INCEPTION_STD, first_conv=first_conv, classifier='head',
        top1=top1, **kwargs)


# Pretrained configs beside the variants, keyed ``architecture.tag`` as timm's (hub ids are
# timm's; top-1 as evaluated by timm). A variant's first config is its default. ``untrained``
# (timm's tag for a config without weights): preprocessing only.
PRETRAINED_CFGS = {
    'tnt_s_patch16_224.in1k': _cfg('timm/tnt_s_patch16_224.in1k', top1=81.506),
    'tnt_b_patch16_224.in1k': _cfg('timm/tnt_b_patch16_224.in1k', top1=82.864),
    'tnt_s_legacy_patch16_224.in1k': _cfg('timm/tnt_s_legacy_patch16_224.in1k', top1=81.512),
    'tnt_tiny_patch16_64.untrained': _cfg(img_size=64),
}

# PyramidTNT: weights published on BaiduDisk only, no hub id; top-1 as the paper reports.
PYRAMID_PRETRAINED_CFGS = {
    'ptnt_ti_patch16_192.in1k': _cfg(top1=75.2, img_size=192, first_conv='patch_embed.common_conv.0'),
    'ptnt_s_patch16_256.in1k': _cfg(top1=82.0, img_size=256, first_conv='patch_embed.common_conv.0'),
    'ptnt_m_patch16_256.in1k': _cfg(top1=83.5, img_size=256, first_conv='patch_embed.common_conv.0'),
    'ptnt_b_patch16_256.in1k': _cfg(top1=84.1, img_size=256, first_conv='patch_embed.common_conv.0'),
    'ptnt_tiny_patch16_64.untrained': _cfg(img_size=64, first_conv='patch_embed.common_conv.0'),
}
_FAMILY_CFGS = {'tnt': PRETRAINED_CFGS, 'ptnt': PYRAMID_PRETRAINED_CFGS}


def list_models(family='tnt'):
    """Names of the registered variants of ``family`` ('tnt' or 'ptnt'; None: both), or, given
    anything else, as timm's ``list_models(filter)``: the names of both families that match it,
    a name or a wildcard pattern (``'*tiny*'``)."""
    if family in FAMILIES:
        return sorted(FAMILIES[family])
    names = sorted(name for table in FAMILIES.values() for name in table)
    return names if family is None else fnmatch.filter(names, family)


def list_pretrained():
    """``architecture.tag`` of every config with published weights, as timm's ``list_pretrained``."""
    return sorted(k for cfgs in _FAMILY_CFGS.values() for k, cfg in cfgs.items() if cfg['hf_hub_id'])


def family(name):
    """'tnt' or 'ptnt': the family of the bare variant ``name``; ValueError if unknown."""
    for key, table in FAMILIES.items():
        if name in table:
            return key
    raise ValueError(f"unknown TNT variant {name!r}; known: {', '.join(list_models(None))}")


def model_args(name):
    """Constructor arguments of variant ``name``: for ``TNT``, or for ``PyramidTNT`` where
    ``family(name)`` is 'ptnt', in either framework."""
    keys = _ARCH_KEYS if family(name) == 'tnt' else _PYRAMID_KEYS
    return {k: FAMILIES[family(name)][name][k] for k in keys}


def split_tag(name):
    """``(architecture, tag)`` of ``name``, bare (the variant's default tag) or ``architecture.tag``.

    Raises ValueError on an unknown variant or tag, listing the known ones.
    """
    arch, _, tag = name.partition('.')
    cfgs = _FAMILY_CFGS[family(arch)]
    tags = [k.partition('.')[2] for k in cfgs if k.partition('.')[0] == arch]
    if not tag:
        return arch, tags[0]
    if tag not in tags:
        raise ValueError(f"unknown tag {tag!r} of {arch}; known: {', '.join(f'{arch}.{t}' for t in tags)}")
    return arch, tag


def pretrained_cfg(name):
    """Preprocessing and hub facts of ``name`` (bare: the default tag), with its architecture and tag."""
    arch, tag = split_tag(name)
    return dict(_FAMILY_CFGS[family(arch)][f'{arch}.{tag}'], architecture=arch, tag=tag)


def check_pretrained(name, pretrained, checkpoint_path):
    """Raise ValueError if ``pretrained`` weights of ``name`` are asked for without a file: nothing downloads."""
    if pretrained and checkpoint_path is None:
        cfg = pretrained_cfg(name)
        where = (f", such as the one `huggingface-cli download {cfg['hf_hub_id']}` leaves" if cfg['hf_hub_id']
                 else f"; {cfg['architecture']}.{cfg['tag']} has no published weights")
        raise ValueError(f'pretrained=True downloads nothing: pass checkpoint_path= a checkpoint file '
                         f'or a hub folder{where}')


def feature_take_indices(num_blocks, indices=None):
    """(absolute block indices, the largest) selected by ``indices``, as timm's helper.

    None: every block; an int n: the last n; a non-empty list or tuple of ints: those blocks
    (negative from the end). ValueError otherwise, naming what was given.
    Pure Python on static values, so it also runs inside a MindSpore GRAPH mode ``construct``.
    """
    if indices is None:
        indices = num_blocks
    if isinstance(indices, int):
        if not 0 < indices <= num_blocks:
            raise ValueError(f'last-n ({indices}) is out of range (1 to {num_blocks})')
        return [num_blocks - indices + i for i in range(indices)], num_blocks - 1
    if not isinstance(indices, (list, tuple)) or not indices:
        raise ValueError(f'indices {indices!r}: None, an int (the last n blocks) or a non-empty list of block indices')
    take = []
    for i in indices:
        if not isinstance(i, int):
            raise ValueError(f'block index {i!r} is not an int')
        if not -num_blocks <= i < num_blocks:
            raise ValueError(f'block index {i} is out of range ({-num_blocks} to {num_blocks - 1})')
        take.append(num_blocks + i if i < 0 else i)
    return take, max(take)
