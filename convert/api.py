"""Python API: checkpoint files into ready models of either framework."""
from convert import readers
from convert.canonical import adapt, check_finite, check_img_size, to_timm
from convert.errors import ConversionError
from convert.pyramid import adapt as pyramid_adapt, check_img_size as pyramid_check_img_size, is_pyramid
from convert.pyramid import to_canonical as pyramid_canonical
from tnt_common.variants import PYRAMID_VARIANTS, VARIANTS, check_pretrained, family, pretrained_cfg, split_tag


def read_hub(path, model_name=None, ema=False, numerics=None):
    """(``Canonical``, ``readers.Checkpoint``) of any supported file or hub folder; NaN/Inf refused.

    A PyramidTNT (``convert.pyramid``) comes back under official names, a TNT under timm's.
    ``numerics`` overrides the numerics the file records or its family implies.
    """
    ckpt = readers.read(path, ema=ema)
    configured = model_name is None and ckpt.architecture in {**VARIANTS, **PYRAMID_VARIANTS}
    if configured:
        model_name = ckpt.architecture
    try:
        if is_pyramid(ckpt.arrays):
            can = pyramid_canonical(ckpt.arrays, model_name, numerics, ckpt.numerics)
        elif model_name in PYRAMID_VARIANTS:
            raise ConversionError(f'{model_name} is a PyramidTNT variant, the file holds no PyramidTNT '
                                  f'(no stages.N.relative_pos, word_merges or sentence_merges)')
        else:
            can = to_timm(ckpt.arrays, model_name, numerics, ckpt.numerics)
        check_finite(can.arrays)
        if ckpt.num_classes is not None and ckpt.num_classes != can.num_classes:
            raise ConversionError(f'config.json says {ckpt.num_classes} classes, the head has {can.num_classes}')
    except ConversionError as e:
        raise ConversionError(f'{ckpt.path}: ' + (f'config.json names {model_name}; ' if configured else '')
                              + str(e)) from None
    return can, ckpt


def adapt_any(can, num_classes=None, img_size=None, head=None):
    """``canonical.adapt`` or, for a PyramidTNT, ``pyramid.adapt``."""
    return (pyramid_adapt if family(can.variant) == 'ptnt' else adapt)(can, num_classes, img_size, head)


def load_model(path, framework, model_name=None, num_classes=None, img_size=None, ema=False, numerics=None,
               **model_kwargs):
    """(a ``framework`` ('mindspore' or 'torch') model holding the weights of checkpoint ``path``, its
    ``Canonical``): what the two loaders below return, with what was read from the file."""
    from convert.transfer import model_io
    can, ckpt = read_hub(path, model_name, ema, numerics)
    build, to_numpy, load = model_io(framework, family(can.variant))
    nc = can.num_classes if num_classes is None else num_classes
    size = can.img_size if img_size is None else img_size
    skip = 'skip' if nc in (0, can.num_classes) else ''   # every weight comes from the file
    try:   # the size in --img-size's words, before the model refuses it
        (pyramid_check_img_size if family(can.variant) == 'ptnt' else check_img_size)(can, size)
    except ConversionError as e:
        raise ConversionError(f'{ckpt.path}: {e}') from None
    try:
        model = build(can.variant, num_classes=nc, img_size=size,
                      **{**can.numerics.model_kwargs(), 'weight_init': skip, **model_kwargs})
    except (TypeError, ValueError) as e:
        raise ConversionError(f'{ckpt.path}: cannot build {can.variant}: {e}') from None

    def model_head(embed_dim, n):  # the model's own freshly initialised head
        return {k: v for k, v in to_numpy(model).items() if k.startswith('head.')}

    try:
        arrays, _, _, _ = adapt_any(can, nc, size, head=model_head)
        return load(arrays, model), can
    except (KeyError, ValueError) as e:
        raise ConversionError(f'{ckpt.path}: {e.args[0] if e.args else e}') from None


def load_torch_into_mindspore(path, model_name=None, num_classes=None, img_size=None, ema=False, numerics=None,
                              **model_kwargs):
    """A ``mindspore_tnt`` TNT or PyramidTNT holding the weights of checkpoint ``path``, loaded strictly.

    ``path``: any file the readers support (timm, legacy, official, mmpretrain, MindCV,
    model zoo, ours; official PyramidTNT and ours; torch, safetensors or ``.ckpt``) or a
    Hugging Face hub folder.
    ``model_name`` None detects the variant. The model computes with the file's numerics
    (GELU form, LayerNorm eps: recorded in the file, else its family's); ``numerics`` (a
    preset name such as 'pytorch', or ``tnt_common.numerics.Numerics``) overrides them.
    ``num_classes`` different from the checkpoint's replaces the head by a freshly
    initialised one (0 removes it); ``img_size`` resamples ``patch_pos`` (TNT only); ``ema`` picks EMA
    weights; ``model_kwargs`` go to the model's constructor (``drop_path_rate``, ``impl``, ``gelu``
    overriding the numerics, ...). Raises ``ConversionError`` (a ValueError) with a one-line
    message on bad input.
    """
    return load_model(path, 'mindspore', model_name, num_classes, img_size, ema, numerics, **model_kwargs)[0]


def load_mindspore_into_torch(path, model_name=None, num_classes=None, img_size=None, ema=False, numerics=None,
                              **model_kwargs):
    """A ``torch_ref`` TNT or PyramidTNT holding the weights of checkpoint ``path``, loaded strictly.

    The reverse of ``load_torch_into_mindspore``, with the same arguments; it too reads
    every supported layout and format. A PyramidTNT's ``num_batches_tracked`` are 0.
    """
    return load_model(path, 'torch', model_name, num_classes, img_size, ema, numerics, **model_kwargs)[0]


def create_model(framework, name, pretrained=False, checkpoint_path=None, **kwargs):
    """timm's ``create_model`` for ``framework`` ('mindspore' or 'torch'), which
    ``mindspore_tnt.create_model`` and ``torch_ref.create_model`` are.

    ``name``: a variant, bare or tagged as timm (``tnt_s_patch16_224.in1k``, see
    ``tnt_common.variants.PRETRAINED_CFGS``), or a PyramidTNT variant (``ptnt_*``); ``kwargs`` override (num_classes, img_size,
    drop_path_rate, gelu, impl, ...). ``checkpoint_path``: any file or Hugging Face hub folder
    the readers support, loaded strictly (``load_torch_into_mindspore`` /
    ``load_mindspore_into_torch``): the model computes with the file's numerics unless
    ``gelu``/``norm_eps``/``final_norm_eps`` are given; ``num_classes`` different from the
    file's gives a fresh head, ``img_size`` resamples ``patch_pos``. Nothing downloads:
    ``pretrained=True`` needs ``checkpoint_path``.
    """
    check_pretrained(name, pretrained, checkpoint_path)
    arch = split_tag(name)[0]
    if checkpoint_path is None:
        if framework == 'mindspore':
            from mindspore_tnt import ptnt, tnt
        else:
            from torch_ref import ptnt, tnt
        return (ptnt if family(arch) == 'ptnt' else tnt).create_model(name, **kwargs)
    load = load_torch_into_mindspore if framework == 'mindspore' else load_mindspore_into_torch
    model = load(checkpoint_path, arch, **kwargs)
    model.pretrained_cfg = pretrained_cfg(name)
    return model
