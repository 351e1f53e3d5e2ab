"""MindSpore TNT and PyramidTNT: the same models as ``torch_ref``, as ``mindspore.nn.Cell``s."""
from tnt_common.variants import list_models, list_pretrained
from mindspore_tnt.ptnt import PyramidTNT
from mindspore_tnt.tnt import TNT, ForwardIntermediates, WithStages

__all__ = ['TNT', 'PyramidTNT', 'ForwardIntermediates', 'WithStages', 'create_model', 'list_models', 'list_pretrained']


def create_model(name, pretrained=False, checkpoint_path=None, **kwargs):
    """timm's ``create_model``: variant ``name`` built fresh, or holding the weights of
    ``checkpoint_path`` (any file ``convert`` reads); see ``convert.api.create_model``."""
    from convert.api import create_model as create
    return create('mindspore', name, pretrained, checkpoint_path, **kwargs)
