"""PyTorch reference TNT, state-dict compatible with timm."""
from tnt_common.variants import list_models, list_pretrained
from torch_ref.tnt import TNT, create_model

__all__ = ['TNT', 'create_model', 'list_models', 'list_pretrained']
