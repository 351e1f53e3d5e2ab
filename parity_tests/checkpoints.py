"""Checkpoint files as the tools write them, from ``{timm_name: array}`` random weights."""
import mindspore as ms
import numpy as np
import torch

import mindspore_tnt
import torch_ref
from convert.transfer import numpy_to_mindspore
from parity.weights import random_timm_weights

TINY = 'tnt_tiny_patch16_64'


def tensors(arrays, prefix=''):
    """``{prefix + name: torch tensor}`` of numpy arrays, as ``torch.save`` stores a state dict."""
    return {prefix + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def random_state(name=TINY, seed=0):
    """Distinct, variance-preserving random weights of variant ``name`` (``parity.weights``)."""
    shapes = {k: v.shape for k, v in torch_ref.create_model(name).state_dict().items()}
    return random_timm_weights(shapes, seed)


class WithLoss(ms.nn.Cell):
    """A training wrapper as user code writes it: parameters gain a ``model.`` prefix."""

    def __init__(self, model):
        super().__init__()
        self.model = model


def save_mindspore(arrays, path, prefix=False, fmt='ckpt'):
    """``arrays`` in a mindspore_tnt model saved by ``ms.save_checkpoint`` (``prefix``: inside ``WithLoss``)."""
    net = numpy_to_mindspore(arrays, mindspore_tnt.create_model(TINY))
    ms.save_checkpoint(WithLoss(net) if prefix else net, str(path), format=fmt,
                       append_dict={'epoch_num': 3, 'step_num': 120} if fmt == 'ckpt' else None)
