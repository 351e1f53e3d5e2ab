"""MindSpore TNT: the same models as ``torch_ref``, as ``mindspore.nn.Cell``s."""
from tnt_common.variants import list_models
from mindspore_tnt.tnt import TNT, WithIntermediates, create_model

__all__ = ['TNT', 'WithIntermediates', 'create_model', 'list_models']
