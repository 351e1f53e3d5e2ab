"""Python API: checkpoint files into ready models of either framework."""
from convert import readers
from convert.canonical import adapt, check_finite, to_timm
from convert.errors import ConversionError


def read_hub(path, model_name=None, ema=False):
    """(``Canonical``, ``readers.Checkpoint``) of any supported file; NaN/Inf refused."""
    ckpt = readers.read(path, ema=ema)
    try:
        can = to_timm(ckpt.arrays, model_name)
        check_finite(can.arrays)
    except ConversionError as e:
        raise ConversionError(f'{ckpt.path}: {e}') from None
    return can, ckpt


def _load(path, model_name, num_classes, img_size, ema, build, to_numpy, load):
    can, ckpt = read_hub(path, model_name, ema)
    nc = can.num_classes if num_classes is None else num_classes
    size = can.img_size if img_size is None else img_size
    try:
        model = build(can.variant, num_classes=nc, img_size=size)
    except (TypeError, ValueError) as e:
        raise ConversionError(f'{ckpt.path}: cannot build {can.variant}: {e}') from None

    def model_head(embed_dim, n):  # the model's own freshly initialised head
        return {k: v for k, v in to_numpy(model).items() if k.startswith('head.')}

    arrays, _, _, _ = adapt(can, nc, size, head=model_head)
    try:
        return load(arrays, model)
    except (KeyError, ValueError) as e:
        raise ConversionError(f'{ckpt.path}: {e.args[0] if e.args else e}') from None


def load_torch_into_mindspore(path, model_name=None, num_classes=None, img_size=None, ema=False):
    """A ``mindspore_tnt`` TNT holding the weights of checkpoint ``path``, loaded strictly.

    ``path``: any file the readers support (timm, legacy, official, MindSpore; torch,
    safetensors or ``.ckpt``). ``model_name`` None detects the variant. ``num_classes``
    different from the checkpoint's replaces the head by a freshly initialised one (0
    removes it); ``img_size`` resamples ``patch_pos``; ``ema`` picks EMA weights. Raises
    ``ConversionError`` (a ValueError) with a one-line message on bad input.
    """
    import mindspore_tnt
    from convert.transfer import mindspore_to_numpy, numpy_to_mindspore
    return _load(path, model_name, num_classes, img_size, ema, mindspore_tnt.create_model,
                 mindspore_to_numpy, numpy_to_mindspore)


def load_mindspore_into_torch(path, model_name=None, num_classes=None, img_size=None, ema=False):
    """A ``torch_ref`` TNT holding the weights of checkpoint ``path``, loaded strictly.

    The reverse of ``load_torch_into_mindspore``, with the same arguments; it too reads
    every supported layout and format.
    """
    import torch_ref
    from convert.transfer import numpy_to_torch, torch_to_numpy
    return _load(path, model_name, num_classes, img_size, ema, torch_ref.create_model,
                 torch_to_numpy, numpy_to_torch)
