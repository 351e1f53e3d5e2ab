"""MindSpore TNT: the same models as ``torch_ref``, as ``mindspore.nn.Cell``s."""
from tnt_common.variants import list_models, list_pretrained
from mindspore_tnt.tnt import TNT, ForwardIntermediates, WithStages, create_model

__all__ = ['TNT', 'ForwardIntermediates', 'WithStages', 'create_model', 'list_models', 'list_pretrained']
