"""The measured steps: ``build(spec)`` returns ``(compile, run)`` for one inference or training step.

A spec names ``framework`` ('mindspore' or 'torch'), ``mode`` ('graph', 'pynative' or 'eager'),
``task`` ('infer' or 'train'), ``model``, ``batch`` and ``model_kwargs`` (extra ``create_model``
arguments). ``run()`` runs one step to completion (its result on the host); ``compile()``
compiles the GRAPH-mode graph without running it (None in other modes). Training is the
recipe's step (soft-target cross-entropy with label smoothing 0.1, backward, gradient clipping
at global norm 5, AdamW with the recipe's weight-decay groups, drop path 0.1): MindSpore runs
``tnt_train.train_step.TrainStep``, torch the same sequence eagerly with ``torch.optim.AdamW``.
"""
import numpy as np

from tnt_common.fixtures import make_batch
from tnt_common.recipe import RECIPE
from tnt_common.variants import model_args

NUM_CLASSES = 1000


def inputs(spec, seed=0):
    """(images, soft targets) as numpy: a deterministic batch and smoothed one-hot labels."""
    batch, smoothing = spec['batch'], RECIPE['smoothing']
    targets = np.full((batch, NUM_CLASSES), smoothing / NUM_CLASSES, np.float32)
    targets[np.arange(batch), np.random.default_rng(seed).integers(0, NUM_CLASSES, batch)] += 1. - smoothing
    return make_batch(batch, model_args(spec['model'])['img_size'], seed), targets


def build(spec):
    kwargs = dict({'drop_path_rate': RECIPE['drop_path']} if spec['task'] == 'train' else {}, **spec['model_kwargs'])
    return (mindspore_step if spec['framework'] == 'mindspore' else torch_step)(spec, kwargs)


def mindspore_step(spec, kwargs):
    import mindspore as ms
    import mindspore_tnt
    from mindspore_tnt.context import select
    select(spec['mode'], 'CPU')
    net = mindspore_tnt.create_model(spec['model'], **kwargs)
    images, targets = (ms.Tensor(a) for a in inputs(spec))
    net.set_train(spec['task'] == 'train')
    if spec['task'] == 'infer':
        cell, args, pick = net, (images,), lambda out: out
    else:
        from tnt_train.optim import create_optimizer
        from tnt_train.train_step import TrainStep
        optimizer, lr_schedule = create_optimizer(net, [RECIPE['lr']])
        cell = TrainStep(net, optimizer, lr_schedule, clip_grad=RECIPE['clip_grad'])
        args, pick = (images, targets), lambda out: out[0]
    return ((lambda: cell.compile(*args)) if spec['mode'] == 'graph' else None), lambda: pick(cell(*args)).asnumpy()


def torch_step(spec, kwargs):
    import torch
    import torch_ref
    from parity.train_step import torch_optimizer
    model = torch_ref.create_model(spec['model'], **kwargs)
    images, targets = (torch.from_numpy(a) for a in inputs(spec))
    if spec['task'] == 'infer':
        model.eval()
        return None, torch.no_grad()(lambda: model(images).numpy())
    model.train()
    optimizer = torch_optimizer(model, RECIPE['lr'])

    def train():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), RECIPE['clip_grad'])
        optimizer.step()
        return loss.item()
    return None, train
