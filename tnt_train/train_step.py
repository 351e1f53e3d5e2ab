"""One compiled optimisation step, reusable by training and benchmarks.

``TrainStep(net, optimizer, lr_schedule, clip_grad=5., loss_scaler=DynamicLossScaler(...))``
runs, as one graph: LR for this step -> (with ``drop_path_noise``: this step's drop-path
noise fed in) -> forward -> soft-target cross-entropy -> backward (of the loss times the
loss scale) -> all-reduce mean over ranks (under msrun) -> unscale
-> finiteness check -> clip by global norm -> AdamW (skipped if any gradient is not
finite) -> EMA update -> loss-scale update. It returns ``(loss, grad_norm, finite,
loss_scale, lr)`` of the step; the loss is the mean over all ranks' batches. The LR
schedule advances on every step, skipped or not.
"""
import mindspore as ms
from mindspore import nn, ops

from mindspore_tnt import square_sum
from tnt_common.recipe import RECIPE

# The dynamic loss scale's state in a training checkpoint.
LOSS_SCALE_NAMES = ('loss_scale.value', 'loss_scale.counter')
_square_sum = ops.MultitypeFuncGraph('square_sum')
_scale = ops.MultitypeFuncGraph('scale')


@_square_sum.register('Tensor')
def _tensor_square_sum(grad):
    return ops.reduce_sum(ops.square(grad.astype(ms.float32)))


@_square_sum.register('Function', 'Tensor')
def _kernel_square_sum(kernel, grad):
    """``kernel`` (``mindspore_tnt.square_sum``'s CPU kernel) on fp32 gradients, the ops on others."""
    if grad.dtype != ms.float32:
        return _tensor_square_sum(grad)
    return kernel(grad).reshape(())


@_scale.register('Tensor', 'Tensor')
def _tensor_scale(factor, grad):
    return grad * factor.astype(grad.dtype)


def dynamic_loss_scaler(init=RECIPE['loss_scale'], window=RECIPE['loss_scale_window'],
                        factor=RECIPE['loss_scale_factor']):
    """MindSpore's ``DynamicLossScaler`` with parameter names that cannot clash in a checkpoint."""
    scaler = ms.amp.DynamicLossScaler(float(init), int(factor), int(window))
    scaler.scale_value.name, scaler.counter.name = LOSS_SCALE_NAMES
    return scaler


class NetWithLoss(nn.Cell):
    """Mean soft-target cross-entropy of ``net`` (targets: (B, K) probabilities), in fp32."""

    def __init__(self, net):
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, images, targets):
        logits = self.net(images).astype(ms.float32)
        return ops.cross_entropy(logits, targets)


class TrainStep(nn.Cell):
    """forward + loss + grad + all-reduce + unscale + clip + AdamW (+ EMA), skipping non-finite steps."""

    def __init__(self, net, optimizer, lr_schedule, clip_grad=RECIPE['clip_grad'], loss_scaler=None,
                 ema=None, world=1, drop_path_noise=None):
        super().__init__(auto_prefix=False)
        self.net_with_loss = NetWithLoss(net)
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.weights = optimizer.parameters
        self.clip_grad = float(clip_grad or 0.)
        self.loss_scaler = loss_scaler
        self.ema = ema
        self.drop_path_noise = drop_path_noise
        self.reducer = nn.DistributedGradReducer(self.weights, mean=True, degree=world) if world > 1 else None
        self.all_reduce = ops.AllReduce() if world > 1 else None
        self.world = world
        self.grad_fn = ms.value_and_grad(self.scaled_loss, None, self.weights, has_aux=True)
        self.hyper_map = ops.HyperMap()
        self.square_sum_kernel = square_sum.kernel_ops() if ms.get_context('device_target') == 'CPU' else None

    def scaled_loss(self, images, targets, scale):
        loss = self.net_with_loss(images, targets)
        return loss * scale, loss

    def construct(self, images, targets, noise=None):
        """One step; ``noise``: the step's drop-path noise, given iff built with ``drop_path_noise``."""
        lr = self.lr_schedule()
        if self.drop_path_noise is not None:
            images = ops.depend(images, self.drop_path_noise.feed(noise))
        scale = ops.ones((), ms.float32)
        if self.loss_scaler is not None:
            scale = self.loss_scaler.scale_value.value()
        (_, loss), grads = self.grad_fn(images, targets, scale)
        if self.reducer is not None:
            grads = self.reducer(grads)
            loss = self.all_reduce(loss) / self.world
        if self.loss_scaler is not None:  # without one the scale is 1: no pass over the gradients
            grads = self.hyper_map(ops.partial(_scale, 1. / scale), grads)
        if self.square_sum_kernel is None:
            grad_norm = ops.sqrt(ops.addn(self.hyper_map(_square_sum, grads)))
        else:
            grad_norm = ops.sqrt(ops.addn(self.hyper_map(ops.partial(_square_sum, self.square_sum_kernel), grads)))
        finite = ops.isfinite(grad_norm)
        if self.clip_grad > 0:
            factor = ops.minimum(self.clip_grad / (grad_norm + 1e-6), 1.)
            grads = self.hyper_map(ops.partial(_scale, factor), grads)
        if finite:
            loss = ops.depend(loss, self.optimizer(grads))
            if self.ema is not None:
                loss = ops.depend(loss, self.ema())
        if self.loss_scaler is not None:
            loss = ops.depend(loss, self.loss_scaler.adjust(finite))
        return loss, grad_norm, finite, scale, lr
