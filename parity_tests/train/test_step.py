"""Training-step parity: 5 AdamW steps from the same init on the same batches, drop path on
with identical masks, the training package's optimizer, decay groups and LR schedule.

Bounds per step: loss ``|Δ|/|loss| <= 1e-5``; for every tensor, the update since the start
agrees for the typical element, ``median|u_ms - u_pt| / median|u_pt| <= 1e-4``, and no
element is off by more than the tensor's largest update, ``max|u_ms - u_pt| / max|u_pt| <= 1``,
but the elements whose first-step gradient is below the gradients' resolution (their first
AdamW step is rounding; docs/parity.md derives all three).
"""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn
from mindspore.experimental.optim import AdamW

from parity.droppath import mindspore_noise, torch_noise
from parity.forward import random_models, set_mode
from convert.transfer import torch_to_numpy
from parity.train_step import (DROP_PATH, ELEMENT_BOUND, LOSS_BOUND, STEPS, UPDATE_BOUND, batches, compare_training,
                               describe_training, mindspore_train, run_training, schedule, torch_train)
from tnt_common.variants import VARIANTS
from tnt_train.optim import LRSchedule, create_optimizer, param_groups

NAME = 'tnt_tiny_patch16_64'
FAULT_STEPS = 2


@pytest.mark.parametrize('name', ['tnt_tiny_patch16_64', 'tnt_s_patch16_224'])
def test_train_steps_agree(name):
    report, test, ref = run_training(name)
    print(describe_training(report))
    assert report['passed'], describe_training(report)
    # every weight moved in every step (the first against the initial weights)
    assert all(r['ref_max'] > 0 for r in report['steps'][0]['rows'])
    assert all(not np.array_equal(after[k], before[k]) for before, after in zip(ref[1], ref[1][1:]) for k in after)
    # drop path on: block 0 has rate 0; every other block drew 4 masks per step (inner
    # attention and MLP per sentence, outer attention and MLP per image), the same in both
    assert report['mask_draws'] == STEPS * (VARIANTS[name]['depth'] - 1) * 4


def optimizer_with(groups_of):
    """An optimizer factory like ``tnt_train.optim.create_optimizer`` with other decay groups."""
    def create(net, lrs):
        opt = AdamW(groups_of(net), lr=float(lrs[0]), weight_decay=0.05, eps=1e-8)
        return opt, LRSchedule(opt, lrs)
    return create


def test_catches_position_embedding_in_decay_group():
    def groups(net):
        decay, no_decay = param_groups(net, 0.05)
        moved = [p for p in no_decay['params'] if p.name == 'patch_pos']
        return [{'params': decay['params'] + moved, 'weight_decay': 0.05},
                {'params': [p for p in no_decay['params'] if p.name != 'patch_pos'], 'weight_decay': 0.}]
    report, _, _ = run_training(NAME, steps=FAULT_STEPS, create_optimizer=optimizer_with(groups))
    assert not report['passed']
    assert all(s['failing'] == ['patch_pos'] for s in report['steps']), describe_training(report)


def test_catches_decay_on_every_parameter():
    report, _, _ = run_training(NAME, steps=FAULT_STEPS,
                                create_optimizer=optimizer_with(lambda net: net.trainable_params()))
    assert not report['passed']
    failing = set(report['steps'][0]['failing'])
    assert {'cls_token', 'norm.weight', 'blocks.0.norm_in.weight', 'head.bias'} <= failing
    assert 'blocks.0.mlp.fc1.weight' not in failing  # decayed in both: still agrees


def test_catches_different_drop_path_masks():
    torch_model, net = random_models(NAME, seed=0, drop_path_rate=DROP_PATH)
    set_mode('pynative')
    initial = torch_to_numpy(torch_model)
    data = batches(FAULT_STEPS, 2, 64, 1000)
    lrs = schedule(FAULT_STEPS)
    test = mindspore_train(net, data, lrs, mindspore_noise(1))
    ref = torch_train(torch_model, data, lrs, torch_noise(0))
    report = compare_training(test, ref, initial)
    assert not report['passed']
    assert report['steps'][0]['loss_rel'] > 1e-3


class ReversedElements(nn.Cell):
    """``optimizer`` fed the gradient of ``elements`` of parameter ``name`` with the sign reversed:
    a fault confined to a few elements of one update (AdamW moves them the wrong way)."""

    def __init__(self, optimizer, name, elements):
        super().__init__(auto_prefix=False)
        self.optimizer = optimizer
        self.parameters = optimizer.parameters
        self.index = [p.name for p in optimizer.parameters].index(name)
        sign = np.ones(optimizer.parameters[self.index].shape, np.float32)
        sign.flat[list(elements)] = -1
        self.sign = ms.Tensor(sign)

    def construct(self, gradients):
        i = self.index
        return self.optimizer(gradients[:i] + (gradients[i] * self.sign,) + gradients[i + 1:])


def test_catches_three_elements_updated_the_wrong_way():
    weight = 'blocks.1.mlp.fc1.weight'

    def create(net, lrs):
        optimizer, lr_schedule = create_optimizer(net, lrs)
        return ReversedElements(optimizer, weight, (0, 10_000, 30_000)), lr_schedule
    report, _, _ = run_training(NAME, steps=FAULT_STEPS, create_optimizer=create)
    print(describe_training(report))
    assert not report['passed']
    assert all(s['failing'] == [weight] for s in report['steps']), describe_training(report)
    assert all(s['worst_element']['rel'] > ELEMENT_BOUND for s in report['steps'])
    # the median check alone passes it: 3 of the 36864 elements do not move a median
    assert all(s['loss_rel'] <= LOSS_BOUND and all(r['rel_median'] <= UPDATE_BOUND for r in s['rows'])
               for s in report['steps']), describe_training(report)
