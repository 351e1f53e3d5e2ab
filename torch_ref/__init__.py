"""PyTorch reference TNT, state-dict compatible with timm, and PyramidTNT (official keys)."""
from tnt_common.variants import list_models, list_pretrained
from torch_ref.ptnt import PyramidTNT
from torch_ref.tnt import TNT

__all__ = ['TNT', 'PyramidTNT', 'create_model', 'list_models', 'list_pretrained']


def create_model(name, pretrained=False, checkpoint_path=None, **kwargs):
    """timm's ``create_model``: variant ``name`` built fresh, or holding the weights of
    ``checkpoint_path`` (any file ``convert`` reads); see ``convert.api.create_model``."""
    from convert.api import create_model as create
    return create('torch', name, pretrained, checkpoint_path, **kwargs)
