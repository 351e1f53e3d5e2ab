"""In-memory weight transfer between ``torch_ref`` and ``mindspore_tnt`` models.

Everything passes through ``{timm_name: numpy array}``; names are translated by
``keymap.TIMM_TO_MINDSPORE`` in both directions. PyramidTNT models pass ``keymap=
keymap.PYRAMID_TO_MINDSPORE`` (their torch names are the official ones); ``model_io`` gives
either family's constructor and transfers.
"""
from functools import partial

import numpy as np

from convert.keymap import PYRAMID_TO_MINDSPORE, TIMM_TO_MINDSPORE
from tnt_common.strict import check_strict


def torch_to_numpy(model_or_state):
    """``{timm_name: array}`` of a torch model or state dict (fp32 copies)."""
    state = model_or_state.state_dict() if hasattr(model_or_state, 'state_dict') else model_or_state
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


def mindspore_to_numpy(net, keymap=TIMM_TO_MINDSPORE):
    """``{timm_name: array}`` of a MindSpore TNT."""
    return {keymap.backward(p.name): p.asnumpy().copy() for p in net.get_parameters()}


def numpy_to_mindspore(arrays, net, keymap=TIMM_TO_MINDSPORE):
    """Load ``{timm_name: array}`` into a MindSpore TNT strictly (keys and shapes); tensors
    ``keymap`` drops (torch only) are left out."""
    import mindspore as ms
    params = {p.name: p for p in net.get_parameters()}
    renamed = {keymap.forward(k): v for k, v in arrays.items() if not keymap.drops(k)}
    check_strict({k: p.shape for k, p in params.items()}, {k: v.shape for k, v in renamed.items()},
                 'MindSpore model')
    for k, p in params.items():
        p.set_data(ms.Tensor(np.ascontiguousarray(renamed[k]), dtype=p.dtype))
    return net


def numpy_to_torch(arrays, model):
    """Load ``{timm_name: array}`` into a torch TNT with ``strict=True``."""
    import torch
    state = model.state_dict()
    check_strict({k: v.shape for k, v in state.items()}, {k: v.shape for k, v in arrays.items()}, 'torch model')
    model.load_state_dict({k: torch.from_numpy(np.require(v, requirements=('C', 'W'))).to(state[k].dtype)
                           for k, v in arrays.items()}, strict=True)
    return model


def mindspore_to_torch(net, torch_model):
    """Copy a MindSpore TNT's weights into a torch TNT of the same variant."""
    return numpy_to_torch(mindspore_to_numpy(net), torch_model)


def _pyramid_from_torch(model):
    return {k: v for k, v in torch_to_numpy(model).items() if not PYRAMID_TO_MINDSPORE.drops(k)}


def _pyramid_to_torch(arrays, model):
    from convert.pyramid import from_canonical
    return numpy_to_torch(from_canonical(arrays, 'official'), model)


def model_io(framework, family='tnt'):
    """(create_model, model -> arrays, load(arrays, model) strictly) of ``framework``
    ('mindspore' or 'torch') for ``family`` ('tnt': timm names; 'ptnt': official names
    without BatchNorm counters, ``convert.pyramid``)."""
    pyramid = family == 'ptnt'
    if framework == 'mindspore':
        if pyramid:
            from mindspore_tnt.ptnt import create_model
            return (create_model, partial(mindspore_to_numpy, keymap=PYRAMID_TO_MINDSPORE),
                    partial(numpy_to_mindspore, keymap=PYRAMID_TO_MINDSPORE))
        from mindspore_tnt.tnt import create_model
        return create_model, mindspore_to_numpy, numpy_to_mindspore
    if pyramid:
        from torch_ref.ptnt import create_model
        return create_model, _pyramid_from_torch, _pyramid_to_torch
    from torch_ref.tnt import create_model
    return create_model, torch_to_numpy, numpy_to_torch
