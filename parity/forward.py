"""Forward parity: the same weights and batch through both frameworks, every stage compared."""


def set_mode(mode):
    """Select MindSpore's execution mode, 'graph' or 'pynative', on CPU: parity runs compare on CPU."""
    from mindspore_tnt.context import select
    select(mode, 'CPU')


def random_models(name, seed=0, **kwargs):
    """A torch_ref and a mindspore_tnt model of ``name`` holding the same random weights."""
    import mindspore_tnt
    import torch_ref
    from convert.transfer import numpy_to_mindspore, numpy_to_torch
    from tnt_common.fixtures import random_timm_weights
    torch_model = torch_ref.create_model(name, weight_init='skip', **kwargs)
    weights = random_timm_weights({k: v.shape for k, v in torch_model.state_dict().items()}, seed)
    numpy_to_torch(weights, torch_model)
    net = numpy_to_mindspore(weights, mindspore_tnt.create_model(name, weight_init='skip', **kwargs))
    return torch_model, net


def random_pyramid_models(name, seed=0, **kwargs):
    """A torch_ref and a mindspore_tnt PyramidTNT of ``name`` holding the same random weights,
    the stem's BatchNorm statistics included (``tnt_common.fixtures.random_pyramid_weights``)."""
    from convert.keymap import PYRAMID_TO_MINDSPORE
    from convert.transfer import numpy_to_mindspore, numpy_to_torch
    from mindspore_tnt.ptnt import create_model as create_mindspore
    from tnt_common.fixtures import random_pyramid_weights
    from torch_ref.ptnt import create_model as create_torch
    torch_model = create_torch(name, weight_init='skip', **kwargs)
    weights = random_pyramid_weights({k: v.shape for k, v in torch_model.state_dict().items()}, seed)
    numpy_to_torch(weights, torch_model)
    net = numpy_to_mindspore(weights, create_mindspore(name, weight_init='skip', **kwargs), PYRAMID_TO_MINDSPORE)
    return torch_model, net
