"""The recipe's helpers and the MindSpore AdamW + LR schedule against torch.optim.AdamW."""
import math

import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import nn

from tnt_common.compare import max_abs_err, max_rel_err
from tnt_common.recipe import applies_weight_decay, lr_schedule
from tnt_train.optim import create_optimizer

SHAPES = {'proj.weight': (5, 4), 'proj.bias': (5,), 'norm.gamma': (5,), 'norm.beta': (5,),
          'cls_token': (1, 1, 5), 'patch_pos': (1, 3, 5), 'blocks.0.mlp.fc1.weight': (6, 5)}
SCHEDULE = [0.1, 0.05, 0.02, 0.01]


def test_weight_decay_groups_timm_and_mindspore_names():
    decayed = {
        'blocks.3.attn_in.qk.weight': (48, 24), 'proj.weight': (384, 384), 'head.weight': (10, 384),
        'pixel_embed.proj.weight': (24, 3, 7, 7), 'network.blocks.0.mlp.fc1.weight': (1536, 384)}
    not_decayed = {
        'blocks.3.norm_in.weight': (24,), 'blocks.3.norm_in.bias': (24,), 'blocks.3.norm_in.gamma': (24,),
        'blocks.3.norm_in.beta': (24,), 'head.bias': (10,), 'pixel_embed.proj.bias': (24,),
        'cls_token': (1, 1, 384), 'patch_pos': (1, 197, 384), 'pixel_pos': (1, 24, 4, 4),
        'module.patch_pos': (1, 197, 384), 'network.cls_token': (1, 1, 384)}
    assert all(applies_weight_decay(k, s) for k, s in decayed.items())
    assert not any(applies_weight_decay(k, s) for k, s in not_decayed.items())


def test_lr_schedule():
    lrs = lr_schedule(1e-3, total_steps=110, warmup_steps=10, warmup_lr=1e-6, min_lr=1e-5)
    assert len(lrs) == 110
    assert lrs[0] == pytest.approx(1e-6)
    assert lrs[5] == pytest.approx(1e-6 + (1e-3 - 1e-6) / 2)
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))      # half-way through the cosine
    assert lrs[-1] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 99 / 100)))
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


class Params(nn.Cell):
    def __init__(self, arrays):
        super().__init__()
        self.params = ms.ParameterTuple(ms.Parameter(ms.Tensor(a), name=k) for k, a in arrays.items())


@ms.jit
def _compiled_step(opt, schedule, grads):
    schedule()
    opt(grads)


def run_mindspore(arrays, grads, mode, step_schedule=True):
    ms.set_context(mode=mode)
    holder = Params(arrays)
    opt, schedule = create_optimizer(holder, SCHEDULE, weight_decay=0.05, eps=1e-8)
    names = [p.name for p in opt.parameters]
    for g in grads:
        step_grads = tuple(ms.Tensor(g[n]) for n in names)
        if step_schedule:
            _compiled_step(opt, schedule, step_grads)
        else:
            opt(step_grads)
    return {p.name: p.asnumpy() for p in holder.params}


def run_torch(arrays, grads):
    params = {k: torch.nn.Parameter(torch.from_numpy(a.copy())) for k, a in arrays.items()}
    groups = [{'params': [p for k, p in params.items() if applies_weight_decay(k, p.shape)], 'weight_decay': 0.05},
              {'params': [p for k, p in params.items() if not applies_weight_decay(k, p.shape)],
               'weight_decay': 0.0}]
    opt = torch.optim.AdamW(groups, lr=SCHEDULE[0], eps=1e-8, betas=(0.9, 0.999))
    for s, g in enumerate(grads):
        for group in opt.param_groups:
            group['lr'] = SCHEDULE[s]
        for k, p in params.items():
            p.grad = torch.from_numpy(g[k].copy())
        opt.step()
    return {k: p.detach().numpy() for k, p in params.items()}


@pytest.fixture(scope='module')
def problem():
    rng = np.random.default_rng(0)
    arrays = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    grads = [{k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
             for _ in SCHEDULE]
    return arrays, grads


@pytest.mark.parametrize('mode', [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_adamw_with_schedule_matches_torch(problem, mode):
    arrays, grads = problem
    got = run_mindspore(arrays, grads, mode)
    want = run_torch(arrays, grads)
    assert max_rel_err(got, want) < 1e-5
    # the step really moved every parameter by much more than the bound
    assert min(max_abs_err(want[k], arrays[k]) for k in arrays) > 1e-2


def test_comparison_catches_a_frozen_lr(problem):
    arrays, grads = problem
    got = run_mindspore(arrays, grads, ms.GRAPH_MODE, step_schedule=False)
    assert max_rel_err(got, run_torch(arrays, grads)) > 1e-3


def test_comparison_catches_decay_on_every_parameter(problem, monkeypatch):
    import tnt_train.optim
    monkeypatch.setattr(tnt_train.optim, 'applies_weight_decay', lambda name, shape: True)
    arrays, grads = problem
    got = run_mindspore(arrays, grads, ms.GRAPH_MODE)
    assert max_rel_err(got, run_torch(arrays, grads)) > 1e-4
