"""The model to train: a mindspore_tnt variant, optionally initialised from a converted checkpoint;
its MindIR."""
import os
import re
import shutil
import tempfile

from convert.transfer import mindspore_to_numpy, numpy_to_mindspore
from tnt_train.errors import InputError

HEAD_PREFIX = 'head.'


def _load_converted(path, name, img_size, numerics):
    from convert import load_torch_into_mindspore
    try:
        return load_torch_into_mindspore(path, model_name=name, num_classes=None, img_size=img_size,
                                         numerics=numerics)
    except ValueError as e:
        raise InputError(f'--initial-checkpoint {path}: {e}') from None


def build_model(name, num_classes, img_size, drop_path, checkpoint=None, replace_head=False, numerics=None):
    """``mindspore_tnt`` model ``name``; with ``checkpoint``, its weights come from that file.

    The model computes with ``numerics`` (``tnt_common.numerics``: a preset or spec), by
    default those ``checkpoint`` records or its family implies, else PyTorch's. A checkpoint
    whose head has a different class count is an ``InputError`` unless ``replace_head``
    (``--num-classes`` given): then every weight but the head is loaded and the head keeps
    its fresh initialisation.
    """
    import mindspore_tnt
    from tnt_common.numerics import parse
    src = _load_converted(checkpoint, name, img_size, numerics) if checkpoint else None
    chosen = src.numerics if src is not None else parse(numerics or 'pytorch')
    net = mindspore_tnt.create_model(name, num_classes=num_classes, img_size=img_size, drop_path_rate=drop_path,
                                     **chosen.model_kwargs())
    if src is None:
        return net
    src_classes = getattr(src, 'num_classes', None)
    if src_classes != num_classes and not replace_head:
        raise InputError(f'--initial-checkpoint {checkpoint} has a {src_classes}-class head but the data has '
                         f'{num_classes} classes; pass --num-classes {num_classes} to replace the head')
    arrays = mindspore_to_numpy(src)
    if src_classes != num_classes:
        arrays = {k: v for k, v in arrays.items() if not k.startswith(HEAD_PREFIX)}
        arrays.update({k: v for k, v in mindspore_to_numpy(net).items() if k.startswith(HEAD_PREFIX)})
    try:
        return numpy_to_mindspore(arrays, net)
    except (KeyError, ValueError) as e:
        raise InputError(f'--initial-checkpoint {checkpoint} does not fit {name}: '
                         f'{e.args[0] if e.args else e}') from None


def copy_weights(src, dst):
    """Copy every weight of ``src`` into ``dst`` (models of the same variant and head)."""
    return numpy_to_mindspore(mindspore_to_numpy(src), dst)


# The file names ms.export takes; others (a space, non-ASCII) it refuses
_MINDIR_NAME = re.compile(r'^[0-9a-zA-Z@_\-.:/\\]+$')


def write_mindir(net, path, inputs):
    """MindIR of ``net`` called on ``inputs`` (a Tensor) at ``path`` (ending in ``.mindir``), wherever
    ``path`` is: written in a temporary folder first if MindSpore refuses its name."""
    import mindspore as ms
    if _MINDIR_NAME.match(os.path.abspath(path)):
        return ms.export(net, inputs, file_name=path, file_format='MINDIR')
    folder = tempfile.mkdtemp()
    try:
        ms.export(net, inputs, file_name=os.path.join(folder, 'net.mindir'), file_format='MINDIR')
        shutil.move(os.path.join(folder, 'net.mindir'), path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return None
