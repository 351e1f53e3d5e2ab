"""Python API: checkpoint files into ready models of either framework."""
from convert import readers
from convert.canonical import adapt, check_finite, to_timm
from convert.errors import ConversionError
from tnt_common.variants import VARIANTS, check_pretrained, family, pretrained_cfg, split_tag


def read_hub(path, model_name=None, ema=False, numerics=None):
    """(``Canonical``, ``readers.Checkpoint``) of any supported file or hub folder; NaN/Inf refused.

    ``numerics`` overrides the numerics the file records or its family implies.
    """
    ckpt = readers.read(path, ema=ema)
    if model_name is None and ckpt.architecture in VARIANTS:
        model_name = ckpt.architecture
    try:
        can = to_timm(ckpt.arrays, model_name, numerics, ckpt.numerics)
        check_finite(can.arrays)
        if ckpt.num_classes is not None and ckpt.num_classes != can.num_classes:
            raise ConversionError(f'config.json says {ckpt.num_classes} classes, the head has {can.num_classes}')
    except ConversionError as e:
        raise ConversionError(f'{ckpt.path}: {e}') from None
    return can, ckpt


def _load(path, model_name, num_classes, img_size, ema, numerics, build, to_numpy, load, model_kwargs):
    can, ckpt = read_hub(path, model_name, ema, numerics)
    nc = can.num_classes if num_classes is None else num_classes
    size = can.img_size if img_size is None else img_size
    try:
        model = build(can.variant, num_classes=nc, img_size=size, **dict(can.numerics.model_kwargs(), **model_kwargs))
    except (TypeError, ValueError) as e:
        raise ConversionError(f'{ckpt.path}: cannot build {can.variant}: {e}') from None

    def model_head(embed_dim, n):  # the model's own freshly initialised head
        return {k: v for k, v in to_numpy(model).items() if k.startswith('head.')}

    arrays, _, _, _ = adapt(can, nc, size, head=model_head)
    try:
        return load(arrays, model)
    except (KeyError, ValueError) as e:
        raise ConversionError(f'{ckpt.path}: {e.args[0] if e.args else e}') from None


def load_torch_into_mindspore(path, model_name=None, num_classes=None, img_size=None, ema=False, numerics=None,
                              **model_kwargs):
    """A ``mindspore_tnt`` TNT holding the weights of checkpoint ``path``, loaded strictly.

    ``path``: any file the readers support (timm, legacy, official, mmpretrain, MindCV,
    model zoo, ours; torch, safetensors or ``.ckpt``) or a Hugging Face hub folder.
    ``model_name`` None detects the variant. The model computes with the file's numerics
    (GELU form, LayerNorm eps: recorded in the file, else its family's); ``numerics`` (a
    preset name such as 'pytorch', or ``tnt_common.numerics.Numerics``) overrides them.
    ``num_classes`` different from the checkpoint's replaces the head by a freshly
    initialised one (0 removes it); ``img_size`` resamples ``patch_pos``; ``ema`` picks EMA
    weights; ``model_kwargs`` go to the model's constructor (``drop_path_rate``, ``impl``, ``gelu``
    overriding the numerics, ...). Raises ``ConversionError`` (a ValueError) with a one-line
    message on bad input.
    """
    from convert.transfer import mindspore_to_numpy, numpy_to_mindspore
    from mindspore_tnt.tnt import create_model
    return _load(path, model_name, num_classes, img_size, ema, numerics, create_model,
                 mindspore_to_numpy, numpy_to_mindspore, model_kwargs)


def load_mindspore_into_torch(path, model_name=None, num_classes=None, img_size=None, ema=False, numerics=None,
                              **model_kwargs):
    """A ``torch_ref`` TNT holding the weights of checkpoint ``path``, loaded strictly.

    The reverse of ``load_torch_into_mindspore``, with the same arguments; it too reads
    every supported layout and format.
    """
    from convert.transfer import numpy_to_torch, torch_to_numpy
    from torch_ref.tnt import create_model
    return _load(path, model_name, num_classes, img_size, ema, numerics, create_model,
                 torch_to_numpy, numpy_to_torch, model_kwargs)


def create_model(framework, name, pretrained=False, checkpoint_path=None, **kwargs):
    """timm's ``create_model`` for ``framework`` ('mindspore' or 'torch'), which
    ``mindspore_tnt.create_model`` and ``torch_ref.create_model`` are.

    ``name``: a variant, bare or tagged as timm (``tnt_s_patch16_224.in1k``, see
    ``tnt_common.variants.PRETRAINED_CFGS``), or a PyramidTNT variant (``ptnt_*``, built
    fresh only: no converter reads its checkpoints yet); ``kwargs`` override (num_classes, img_size,
    drop_path_rate, gelu, impl, ...). ``checkpoint_path``: any file or Hugging Face hub folder
    the readers support, loaded strictly (``load_torch_into_mindspore`` /
    ``load_mindspore_into_torch``): the model computes with the file's numerics unless
    ``gelu``/``norm_eps``/``final_norm_eps`` are given; ``num_classes`` different from the
    file's gives a fresh head, ``img_size`` resamples ``patch_pos``. Nothing downloads:
    ``pretrained=True`` needs ``checkpoint_path``.
    """
    check_pretrained(name, pretrained, checkpoint_path)
    if family(split_tag(name)[0]) == 'ptnt':
        if checkpoint_path is not None:
            raise ConversionError(f'{name}: PyramidTNT checkpoints are not converted yet; '
                                  'build the model and load its weights directly')
        if framework == 'mindspore':
            from mindspore_tnt import ptnt
        else:
            from torch_ref import ptnt
        return ptnt.create_model(name, **kwargs)
    if framework == 'mindspore':
        from mindspore_tnt import tnt
        load = load_torch_into_mindspore
    else:
        from torch_ref import tnt
        load = load_mindspore_into_torch
    if checkpoint_path is None:
        return tnt.create_model(name, **kwargs)
    model = load(checkpoint_path, split_tag(name)[0], **kwargs)
    model.pretrained_cfg = pretrained_cfg(name)
    return model
