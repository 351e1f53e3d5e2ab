"""Drop-path masks from a seeded host stream, so that a resumed run draws the same masks.

MindSpore's random ops keep their state inside the compiled graph (on CPU in 2.10 no
generator reaches it), so no checkpoint can restore it. Training instead gives every
DropPath of the model a ``noise`` hook that reads uniform noise fed into each step: drawn
on the host from (seed, global step, rank), it depends only on what a checkpoint holds.

Each step feeds ``values_per_step`` floats; the DropPath calls take consecutive slices
(a cursor advanced inside the graph), in the order the model makes them. After a step the
cursor must stand at the end: ``check_consumed`` says so, or names the mismatch.
"""
import numpy as np

import mindspore as ms
from mindspore import nn, ops

STREAM = 0x0D9      # the last word of the noise's seed: a stream of its own, apart from the data's


def drop_path_layers(net):
    """The DropPath cells of ``net`` that drop anything."""
    from mindspore_tnt.tnt import DropPath
    return [c for _, c in net.cells_and_names() if isinstance(c, DropPath) and c.drop_prob > 0]


def values_per_step(net, batch_size):
    """Noise values the DropPath calls of one forward pass of ``net`` take.

    TNT: each Block's DropPath runs twice on the inner stream (one row per word group, the
    patches plus the class token's row count) and twice on the outer stream (one row per image).
    PyramidTNT: each block's runs twice on the outer stream (one row per image) and, in blocks
    with the inner transformer, twice on the inner stream (one row per sentence of its stage).
    """
    if not hasattr(net, 'stages'):
        return len(drop_path_layers(net)) * 2 * batch_size * (net.num_patches + 1)
    n = 0
    for side, stage in zip(net.grid_sides, net.stages):
        for blk in stage.blocks:
            if blk.drop_path.drop_prob > 0:
                n += 2 * batch_size * (1 + (side * side if blk.inner else 0))
    return n


class DropPathNoise(nn.Cell):
    """Uniform [0, 1) noise for the DropPath layers of a TNT or PyramidTNT, fed from the host each step."""

    def __init__(self, net, batch_size):
        super().__init__(auto_prefix=False)
        self.values_per_step = values_per_step(net, batch_size)
        self.pool = ms.Parameter(ms.Tensor(np.zeros(max(self.values_per_step, 1), np.float32)),
                                 name='drop_path_noise.pool', requires_grad=False)
        self.cursor = ms.Parameter(ms.Tensor(0, ms.int32), name='drop_path_noise.cursor', requires_grad=False)
        for layer in drop_path_layers(net):
            layer.noise = self.draw     # a bound method, not a Cell: nothing joins the model's parameters

    def host_noise(self, seed, global_step, rank):
        """The step's noise: a function of (seed, global step, rank) alone."""
        rng = np.random.default_rng([int(seed), int(global_step), int(rank), STREAM])
        return ms.Tensor(rng.random(self.values_per_step, dtype=np.float32))

    def feed(self, noise):
        """Inside the step, before the forward pass: the new noise, cursor at its start."""
        return ops.depend(ops.assign(self.cursor, ops.zeros((), ms.int32)), ops.assign(self.pool, noise))

    def draw(self, shape, dtype):
        """``DropPath.noise``: the next ``prod(shape)`` values of the pool."""
        n = 1
        for size in shape:
            n = n * size
        start = self.cursor.value()
        values = ops.gather(self.pool, ops.arange(0, n, dtype=ms.int32) + start, 0)
        ops.assign_add(self.cursor, ops.scalar_to_tensor(n, ms.int32))
        return values.reshape(shape).astype(dtype)

    def check_consumed(self):
        """``RuntimeError`` unless the last step took exactly the values fed."""
        used = int(self.cursor.asnumpy())
        if used != self.values_per_step:
            raise RuntimeError(f'drop path: the model drew {used} noise values in a step, '
                               f'{self.values_per_step} were fed')
