"""AdamW with torch semantics, the recipe's weight-decay groups and a per-step LR schedule.

``mindspore.experimental.optim.AdamW`` keeps one LR ``Parameter`` per group;
``LRSchedule`` writes the scheduled value into them from inside the compiled graph,
so the LR steps with every call of a GRAPH-mode train step.
"""
import numpy as np

import mindspore as ms
from mindspore import nn, ops
from mindspore.experimental.optim import AdamW

from tnt_common.recipe import RECIPE, applies_weight_decay


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
    """(AdamW over ``net`` with the recipe's decay groups, its ``LRSchedule`` over ``lr_schedule``).

    Call the schedule once per step before the optimizer, inside the same compiled step
    (``tnt_train.train_step`` does).
    """
    optimizer = AdamW(param_groups(net, weight_decay), lr=float(lr_schedule[0]), betas=tuple(betas),
                      eps=eps, weight_decay=weight_decay)
    return optimizer, LRSchedule(optimizer, lr_schedule)
