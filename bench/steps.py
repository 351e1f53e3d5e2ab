"""The measured steps: one inference or training step of one framework, built from a spec.

A spec is a dict: ``framework`` ('mindspore' or 'torch'), ``mode`` ('graph', 'pynative'
or 'eager'), ``task`` ('infer' or 'train'), ``model`` (variant name), ``batch`` and
``model_kwargs`` (extra ``create_model`` arguments). ``build(spec)`` returns
``(compile, run)``: ``run()`` runs one step to completion (its result on the host);
``compile()`` compiles the GRAPH-mode graph without running it (None in other modes).

Training is the recipe's step: soft-target cross-entropy (label smoothing 0.1), backward,
gradient clipping at global norm 5, AdamW with the recipe's weight-decay groups, drop path
0.1. MindSpore runs ``tnt_train.train_step.TrainStep`` (one compiled graph in GRAPH mode);
torch runs the same sequence eagerly with ``torch.optim.AdamW``.
"""
import numpy as np

from tnt_common.recipe import RECIPE
from tnt_common.variants import VARIANTS

NUM_CLASSES = 1000


def inputs(spec, seed=0):
    """(images, soft targets) as numpy: a deterministic batch and smoothed one-hot labels."""
    from tnt_common.fixtures import make_batch
    batch = spec['batch']
    images = make_batch(batch, VARIANTS[spec['model']]['img_size'], seed)
    labels = np.random.default_rng(seed).integers(0, NUM_CLASSES, batch)
    smoothing = RECIPE['smoothing']
    targets = np.full((batch, NUM_CLASSES), smoothing / NUM_CLASSES, np.float32)
    targets[np.arange(batch), labels] += 1. - smoothing
    return images, targets


def build(spec):
    if spec['framework'] == 'mindspore':
        return _mindspore_step(spec)
    return None, _torch_step(spec)


def _model_kwargs(spec):
    kwargs = dict(spec.get('model_kwargs') or {})
    if spec['task'] == 'train':
        kwargs.setdefault('drop_path_rate', RECIPE['drop_path'])
    return kwargs


def _mindspore_step(spec):
    import mindspore as ms
    import mindspore_tnt
    ms.set_device('CPU')
    ms.set_context(mode=ms.GRAPH_MODE if spec['mode'] == 'graph' else ms.PYNATIVE_MODE)
    net = mindspore_tnt.create_model(spec['model'], **_model_kwargs(spec))
    images, targets = (ms.Tensor(a) for a in inputs(spec))
    if spec['task'] == 'infer':
        net.set_train(False)
        cell, args = net, (images,)

        def run():
            return cell(*args).asnumpy()
    else:
        from tnt_train.optim import create_optimizer
        from tnt_train.train_step import TrainStep
        net.set_train(True)
        optimizer, lr_schedule = create_optimizer(net, [RECIPE['lr']])
        cell, args = TrainStep(net, optimizer, lr_schedule, clip_grad=RECIPE['clip_grad']), (images, targets)

        def run():
            return cell(*args)[0].asnumpy()
    return ((lambda: cell.compile(*args)) if spec['mode'] == 'graph' else None), run


def _torch_step(spec):
    import torch
    from torch.nn import functional as F
    import torch_ref
    from parity.train_step import torch_optimizer
    model = torch_ref.create_model(spec['model'], **_model_kwargs(spec))
    images, targets = (torch.from_numpy(a) for a in inputs(spec))
    if spec['task'] == 'infer':
        model.eval()

        def infer():
            with torch.no_grad():
                return model(images).numpy()
        return infer
    model.train()
    optimizer = torch_optimizer(model, RECIPE['lr'])

    def train():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), RECIPE['clip_grad'])
        optimizer.step()
        return loss.item()
    return train
