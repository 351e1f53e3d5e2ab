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


def _hook(seed, to_tensor):
    """A ``DropPath.noise`` hook: ``to_tensor(array, dtype)`` of the next draw of a ``SharedNoise``."""
    source = SharedNoise(seed)

    def noise(shape, dtype):
        return to_tensor(source.draw(shape), dtype)

    noise.source = source
    return noise


def torch_noise(seed):
    """A ``DropPath.noise`` hook for torch_ref; ``hook.source`` is its ``SharedNoise``."""
    import torch
    return _hook(seed, lambda array, dtype: torch.from_numpy(array).to(dtype))


def mindspore_noise(seed):
    """A ``DropPath.noise`` hook for mindspore_tnt (PYNATIVE); ``hook.source`` is its ``SharedNoise``."""
    import mindspore as ms
    return _hook(seed, lambda array, dtype: ms.Tensor(array).astype(dtype))


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
