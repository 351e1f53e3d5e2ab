"""BatchNorm running statistics: which parameters hold them, and made equal across ranks.

Each rank updates the statistics from its own batches (no synchronised BatchNorm, as in timm by
default). After each epoch, before evaluating, and before every checkpoint, ``DistributeBN`` does
what timm's ``--dist-bn`` does after each epoch: ``reduce`` averages them over the ranks,
``broadcast`` gives every rank rank 0's; so every rank evaluates the model the checkpoint holds,
and a run resumed from a checkpoint mid-epoch continues as the run did. Only PyramidTNT's stem
has any.
"""
import mindspore as ms
from mindspore import nn, ops


def statistics(net):
    """The running mean and variance of every BatchNorm2d of ``net``."""
    return [p for _, c in net.cells_and_names() if isinstance(c, nn.BatchNorm2d)
            for p in (c.moving_mean, c.moving_variance)]


class DistributeBN(nn.Cell):
    """``params`` (running statistics) averaged over the ``world`` ranks (``reduce``) or set to
    rank 0's, in place."""

    def __init__(self, params, world, reduce=True):
        super().__init__(auto_prefix=False)
        self.params = ms.ParameterTuple(params)
        self.world = world
        self.reduce = reduce
        self.all_reduce = ops.AllReduce()
        self.broadcast = ops.Broadcast(0)

    def construct(self):
        for p in self.params:
            if self.reduce:
                ops.assign(p, self.all_reduce(p.value()) / self.world)
            else:
                ops.assign(p, self.broadcast((p.value(),))[0])
        return True


def distributor(net, ema, world, mode):
    """The ``DistributeBN`` of ``net``'s statistics and their EMA's (``ema``, or None) under ``mode``
    (timm's ``--dist-bn``: 'reduce', 'broadcast' or ''); None where it has nothing to do (one
    rank, no BatchNorm, mode '')."""
    stats = statistics(net)
    if world < 2 or not stats or not mode:
        return None
    if ema is not None:
        shadow = {p.name: p for p in ema.shadow}
        stats += [shadow[f'ema.{p.name}'] for p in stats]
    return DistributeBN(stats, world, reduce=mode == 'reduce')
