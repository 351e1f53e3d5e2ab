"""In-memory weight transfer between ``torch_ref`` and ``mindspore_tnt`` models.

Everything passes through ``{timm_name: numpy array}``; names are translated by
``keymap.TIMM_TO_MINDSPORE`` in both directions.
"""
import numpy as np

from convert.keymap import TIMM_TO_MINDSPORE


def check_keys(expected, got, what):
    """Raise ``KeyError`` naming missing and unexpected keys, if any."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        raise KeyError(f'{what}: missing keys {missing[:5]}{"..." if len(missing) > 5 else ""} '
                       f'({len(missing)}), unexpected keys {unexpected[:5]}'
                       f'{"..." if len(unexpected) > 5 else ""} ({len(unexpected)})')


def check_shapes(expected, got, what):
    """Raise ``ValueError`` on the first key whose shape differs."""
    for k, shape in expected.items():
        if tuple(got[k]) != tuple(shape):
            raise ValueError(f'{what}: {k} has shape {tuple(got[k])}, expected {tuple(shape)}')


def torch_to_numpy(model_or_state):
    """``{timm_name: array}`` of a torch model or state dict (fp32 copies)."""
    state = model_or_state.state_dict() if hasattr(model_or_state, 'state_dict') else model_or_state
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


def mindspore_to_numpy(net):
    """``{timm_name: array}`` of a MindSpore TNT."""
    return {TIMM_TO_MINDSPORE.backward(p.name): p.asnumpy().copy() for p in net.get_parameters()}


def numpy_to_mindspore(arrays, net):
    """Load ``{timm_name: array}`` into a MindSpore TNT strictly (keys and shapes)."""
    import mindspore as ms
    params = {p.name: p for p in net.get_parameters()}
    renamed = {TIMM_TO_MINDSPORE.forward(k): v for k, v in arrays.items()}
    check_keys(params, renamed, 'MindSpore model')
    check_shapes({k: p.shape for k, p in params.items()}, {k: v.shape for k, v in renamed.items()},
                 'MindSpore model')
    for k, p in params.items():
        p.set_data(ms.Tensor(np.ascontiguousarray(renamed[k]), dtype=p.dtype))
    return net


def numpy_to_torch(arrays, model):
    """Load ``{timm_name: array}`` into a torch TNT with ``strict=True``."""
    import torch
    state = model.state_dict()
    check_keys(state, arrays, 'torch model')
    check_shapes({k: v.shape for k, v in state.items()}, {k: v.shape for k, v in arrays.items()},
                 'torch model')
    model.load_state_dict({k: torch.from_numpy(np.require(v, requirements=('C', 'W'))).to(state[k].dtype)
                           for k, v in arrays.items()}, strict=True)
    return model


def torch_to_mindspore(torch_model, net):
    """Copy a torch TNT's weights into a MindSpore TNT of the same variant."""
    return numpy_to_mindspore(torch_to_numpy(torch_model), net)


def mindspore_to_torch(net, torch_model):
    """Copy a MindSpore TNT's weights into a torch TNT of the same variant."""
    return numpy_to_torch(mindspore_to_numpy(net), torch_model)
