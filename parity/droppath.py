"""The same drop-path masks in both frameworks, through ``DropPath.noise`` (tests only).

Two hooks made with one seed replay one stream of uniform noise; as both models call
their DropPath layers in the same order with the same shapes, every mask agrees. Each
hook records the shapes it was asked for, so a test can check that the calls matched.
MindSpore runs a Python hook in PYNATIVE mode only.
"""
import numpy as np


class SharedNoise:
    """Seeded uniform [0, 1) float32 noise; records the shape of every draw."""

    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)
        self.shapes = []

    def draw(self, shape):
        self.shapes.append(tuple(shape))
        return self._rng.random(tuple(shape), dtype=np.float32)


def torch_noise(seed):
    """A ``DropPath.noise`` hook for torch_ref; ``hook.source`` is its ``SharedNoise``."""
    import torch
    source = SharedNoise(seed)

    def noise(shape, dtype):
        return torch.from_numpy(source.draw(shape)).to(dtype)

    noise.source = source
    return noise


def mindspore_noise(seed):
    """A ``DropPath.noise`` hook for mindspore_tnt (PYNATIVE); ``hook.source`` is its ``SharedNoise``."""
    import mindspore as ms
    source = SharedNoise(seed)

    def noise(shape, dtype):
        return ms.Tensor(source.draw(shape)).astype(dtype)

    noise.source = source
    return noise


def set_noise(model, noise):
    """Give every DropPath of a torch_ref or mindspore_tnt model the hook ``noise`` (None: the RNG).

    Returns the number of DropPath layers set.
    """
    from mindspore_tnt.tnt import DropPath as MsDropPath
    from torch_ref.tnt import DropPath as PtDropPath
    layers = ([m for m in model.modules() if isinstance(m, PtDropPath)] if hasattr(model, 'modules')
              else [c for _, c in model.cells_and_names() if isinstance(c, MsDropPath)])
    for layer in layers:
        layer.noise = noise
    return len(layers)
