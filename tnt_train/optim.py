"""AdamW with torch semantics, the recipe's weight-decay groups and a per-step LR schedule.

``FusedAdamW`` is ``mindspore.experimental.optim.AdamW`` (same state, same parameter
names, same torch semantics) with each parameter's update done by one
``ops.AdamWeightDecay`` kernel instead of a dozen elementwise ops. It keeps one LR
``Parameter`` per group; ``LRSchedule`` writes the scheduled value into them from inside
the compiled graph, so the LR steps with every call of a GRAPH-mode train step.
"""
import numpy as np

import mindspore as ms
from mindspore import nn, ops
from mindspore.experimental.optim import AdamW

from tnt_common.recipe import RECIPE, applies_weight_decay


_fused_update = ops.MultitypeFuncGraph('fused_adamw_update')


@_fused_update.register('Function', 'Tensor', 'Tensor', 'Tensor', 'Tensor', 'Tensor', 'Tensor', 'Tensor', 'Tensor',
                        'Tensor', 'Tensor')
def _tensor_fused_update(kernel, shrink, lr, beta1, beta2, eps, zero, param, exp_avg, exp_avg_sq, grad):
    ops.assign(param, param * shrink)
    kernel(param, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, zero, grad.astype(param.dtype))
    return True


_fused_update_without_decay = ops.MultitypeFuncGraph('fused_adam_update')


@_fused_update_without_decay.register('Function', 'Tensor', 'Tensor', 'Tensor', 'Tensor', 'Tensor', 'Tensor',
                                      'Tensor', 'Tensor', 'Tensor')
def _tensor_fused_update_without_decay(kernel, lr, beta1, beta2, eps, zero, param, exp_avg, exp_avg_sq, grad):
    kernel(param, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, zero, grad.astype(param.dtype))
    return True


class FusedAdamW(AdamW):
    """torch's AdamW (bias-corrected, decoupled decay, no amsgrad) with one fused kernel per parameter.

    As torch, the weights are first decayed, ``p *= 1 - lr * wd`` (in groups with a decay); then ``ops.AdamWeightDecay``
    (its own decay 0) computes ``p -= lr' * m / (sqrt(v) + eps')`` after updating ``m`` and
    ``v``, without bias correction. With ``c1 = 1 - beta1**t`` and ``c2 = sqrt(1 - beta2**t)``,
    ``lr' = lr * c2 / c1`` and ``eps' = eps * c2`` give torch's ``lr / c1 * m / (sqrt(v) / c2
    + eps)`` up to fp32 rounding. Decaying apart keeps weights whose gradient is zero (the
    taps of a convolution that only ever see padding) on torch's values to the bit: folded
    into the kernel (``decay' = wd * c1 / c2``) their tiny updates differed from torch's by
    one rounding of the weight in about half of them.
    On CPU this replaces about 360 ms of elementwise kernels per TNT-S step and most of
    the training graph's compile time and compile memory (docs/performance.md).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.kernel = ops.AdamWeightDecay()

    @ms.jit
    def update_group(self, lr, weight_decay, beta1, beta2, eps, grads, start_id, end_id):
        step = self.state_step.astype(ms.float32)
        c1 = 1 - ops.pow(beta1, step)
        c2 = ops.sqrt(1 - ops.pow(beta2, step))
        lr_, beta1_, beta2_ = lr * c2 / c1, ms.Tensor(beta1, ms.float32), ms.Tensor(beta2, ms.float32)
        eps_, zero = eps * c2, ms.Tensor(0., ms.float32)
        params, exp_avg, exp_avg_sq = (self.parameters[start_id:end_id], self.exp_avg[start_id:end_id],
                                       self.exp_avg_sq[start_id:end_id])
        if weight_decay == 0.:  # p * 1 is p: no decay ops in the graph for this group
            self.hyper_map(ops.partial(_fused_update_without_decay, self.kernel, lr_, beta1_, beta2_, eps_, zero),
                           params, exp_avg, exp_avg_sq, grads)
        else:
            self.hyper_map(ops.partial(_fused_update, self.kernel, 1 - lr * weight_decay, lr_, beta1_, beta2_, eps_,
                                       zero), params, exp_avg, exp_avg_sq, grads)
        return True

    def construct(self, gradients):
        self.assignadd(self.state_step, self.increase_tensor)
        for group_id, group in enumerate(self.param_groups):
            beta1, beta2 = group['betas']
            start_id, end_id = self.group_start_id[group_id], self.group_start_id[group_id + 1]
            self.update_group(self.lrs[group_id], group['weight_decay'], beta1, beta2, group['eps'],
                              gradients[start_id:end_id], start_id, end_id)
        return True


def param_groups(net, weight_decay):
    """[decayed, not decayed] parameter groups of ``net``'s trainable parameters."""
    decay, no_decay = [], []
    for p in net.trainable_params():
        (decay if applies_weight_decay(p.name, p.shape) else no_decay).append(p)
    groups = [{'params': decay, 'weight_decay': weight_decay},
              {'params': no_decay, 'weight_decay': 0.0}]
    return [g for g in groups if g['params']]


class LRSchedule(nn.Cell):
    """Per-step LR table: each call sets every group's LR to ``table[step]`` and advances ``step``.

    ``step`` is a Parameter, so it is saved and restored with the other training state;
    past the end of the table the last value is kept.
    """

    def __init__(self, optimizer, schedule):
        super().__init__(auto_prefix=False)
        self.group_lrs = ms.ParameterTuple(optimizer.lrs)
        self.table = ms.Tensor(np.asarray(schedule, np.float32))
        self.last = len(schedule) - 1
        self.step = ms.Parameter(ms.Tensor(0, ms.int32), name='lr_schedule.step', requires_grad=False)

    def construct(self):
        lr = self.table[ops.minimum(self.step, self.last)]
        for group_lr in self.group_lrs:
            ops.assign(group_lr, lr)
        ops.assign_add(self.step, ops.ones((), ms.int32))
        return lr


def create_optimizer(net, lr_schedule, weight_decay=RECIPE['weight_decay'], eps=RECIPE['eps'],
                     betas=RECIPE['betas']):
    """(``FusedAdamW`` over ``net`` with the recipe's decay groups, its ``LRSchedule`` over ``lr_schedule``).

    Call the schedule once per step before the optimizer, inside the same compiled step
    (``tnt_train.train_step`` does).
    """
    optimizer = FusedAdamW(param_groups(net, weight_decay), lr=float(lr_schedule[0]), betas=tuple(betas),
                      eps=eps, weight_decay=weight_decay)
    return optimizer, LRSchedule(optimizer, lr_schedule)
