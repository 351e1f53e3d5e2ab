"""Training-step parity: 5 AdamW steps from the same init on the same batches, drop path on
with identical masks, the training package's optimizer, decay groups and LR schedule.

Bounds per step: loss ``|Δ|/|loss| <= 1e-5``; for every tensor, the update since the start
agrees for the typical element, ``median|u_ms - u_pt| / median|u_pt| <= 1e-4``
(docs/parity.md explains why the median and not the max).
"""
import pytest
from mindspore.experimental.optim import AdamW

from parity.droppath import mindspore_noise, torch_noise
from parity.forward import random_models, set_mode
from convert.transfer import torch_to_numpy
from parity.train_step import (DROP_PATH, STEPS, batches, compare_training, describe_training, mindspore_train,
                               run_training, schedule, torch_train)
from tnt_common.variants import VARIANTS
from tnt_train.optim import LRSchedule, param_groups

NAME = 'tnt_tiny_patch16_64'
FAULT_STEPS = 2


@pytest.mark.parametrize('name', ['tnt_tiny_patch16_64', 'tnt_s_patch16_224'])
def test_train_steps_agree(name):
    report, test, ref = run_training(name)
    assert report['passed'], describe_training(report)
    assert len(report['steps']) == STEPS
    # the weights moved, and moved differently in every step (the schedule steps)
    assert all(r['ref_max'] > 0 for s in report['steps'] for r in s['rows'])
    # drop path on: block 0 has rate 0; every other block drew 4 masks per step (inner
    # attention and MLP per sentence, outer attention and MLP per image), the same in both
    assert report['mask_draws'] == STEPS * (VARIANTS[name]['depth'] - 1) * 4
    print(describe_training(report))


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
