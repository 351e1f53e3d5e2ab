"""Exponential moving average of the weights, updated inside the compiled train step."""
import contextlib

import mindspore as ms
from mindspore import nn, ops

from tnt_train.batchnorm import statistics

_ema_update = ops.MultitypeFuncGraph('ema_update')


@_ema_update.register('Number', 'Tensor', 'Tensor')
def _update(decay, shadow, param):
    return ops.assign(shadow, shadow * decay + param.astype(shadow.dtype) * (1. - decay))


def averaged(net):
    """The parameters of ``net`` the EMA follows: the trainable ones, then BatchNorm statistics."""
    return list(net.trainable_params()) + statistics(net)


class EMA(nn.Cell):
    """``ema.<name> = decay * ema.<name> + (1 - decay) * <name>`` for every weight of ``net``
    and, as timm's ``ModelEmaV2`` averages the whole state dict, every BatchNorm running
    statistic (PyramidTNT's stem)."""

    def __init__(self, net, decay):
        super().__init__(auto_prefix=False)
        self.decay = float(decay)
        self.weights = ms.ParameterTuple(averaged(net))
        self.shadow = self.weights.clone(prefix='ema', init='same')
        for p in self.shadow:
            p.requires_grad = False
        self.hyper_map = ops.HyperMap()

    def construct(self):
        return self.hyper_map(ops.partial(_ema_update, self.decay), self.shadow, self.weights)

    def copy_to(self, net):
        """Write the averaged weights into ``net`` (a model of the same variant)."""
        shadow = {p.name[len('ema.'):]: p for p in self.shadow}
        for p in averaged(net):
            p.set_data(shadow[p.name].value())

    @contextlib.contextmanager
    def applied(self, net):
        """``net`` holding the averaged weights inside the block, its own again after: the model
        evaluates and saves its EMA with its own compiled graphs, as timm's validation of
        ``model_ema`` runs under the same autocast, and no second model is kept."""
        params = averaged(net)
        own = [p.asnumpy() for p in params]
        self.copy_to(net)
        try:
            yield net
        finally:
            for p, value in zip(params, own):
                p.set_data(ms.Tensor(value))
