"""Training-step parity: the same init, batches, drop-path masks, AdamW groups and LR schedule.

The MindSpore side is the training package's own step: ``tnt_train.optim.create_optimizer``
(AdamW with the recipe's weight-decay groups, in-graph LR schedule) driven by
``tnt_train.train_step.TrainStep`` (soft-target cross-entropy, global-norm clipping at
the recipe's 5.0; fp32, so no loss scale). The torch side: ``torch.optim.AdamW`` with the
groups and LR table of ``tnt_common.recipe``, the same loss and ``clip_grad_norm_``.
Targets are the labels smoothed by 0.1. Drop path is on, its masks shared through
``parity.droppath`` (so MindSpore runs in PYNATIVE mode).
"""
import copy

import numpy as np

from tnt_common import recipe
from tnt_common.compare import compare_tensors, max_abs_err, median_rel_err, rel_err, worst

STEPS = 5
WARMUP_STEPS = 2
WARMUP_LR = 1e-4
DROP_PATH = recipe.RECIPE['drop_path']
LOSS_BOUND = 1e-5
# Per tensor, on the change of the weights since the start (the update u = w_step - w_init),
# docs/parity.md derives both: the typical element, median|u_ms - u_pt| / median|u_pt|;
# every element, max|u_ms - u_pt| / max|u_pt| (no element off by more than the tensor's
# largest update), leaving out the elements whose first update is rounding (below).
UPDATE_BOUND = 1e-4
ELEMENT_BOUND = 1.
# The fp32 resolution of a tensor's gradient, relative to its largest entry: about 84 ulps
# (2^-23) of that entry, above the per-tensor gradient difference of the frameworks measured
# on TNT (worst 8.2e-6) and ten times the difference between the two sides' gradients of the
# element seen flipped (docs/parity.md). An element whose reference gradient at the first step
# lies below it may have the other sign on the other side, and Adam's first step
# (g / (|g| + eps)) scales that to up to a whole LR step each way; the update since the start
# carries that step on.
GRADIENT_RESOLUTION = 1e-5
# Where torch's own fp32 update is further than the median bound from the exact (float64) one
# (the train-mode BatchNorm weights of PyramidTNT, docs/parity.md), a tensor whose update is
# off the reference by more than the bound still passes if its median distance from the exact
# update is at most this many times torch's: two fp32 computations, each as far from the
# exact result as torch is, with independent rounding.
EXACT_FACTOR = 2.


def schedule(steps=STEPS, warmup_steps=WARMUP_STEPS, warmup_lr=WARMUP_LR):
    """The recipe's per-step LR function (linear warm-up, then cosine to ``min_lr``) at its peak LR.

    The warm-up starts at 1e-4 rather than the recipe's 1e-6: a 1e-6 step is below the
    fp32 resolution of the weights (1.2e-7 near 1) and would compare rounding, not updates.
    """
    return recipe.lr_schedule(recipe.RECIPE['lr'], steps, warmup_steps, warmup_lr=warmup_lr)


def batches(steps, batch, img_size, num_classes, seed=0, smoothing=recipe.RECIPE['smoothing']):
    """``steps`` distinct (images, soft targets) batches: labels smoothed by ``smoothing``."""
    from tnt_common.fixtures import make_batch
    from parity.gradients import make_labels
    out = []
    for s in range(steps):
        labels = make_labels(batch, num_classes, seed + 100 + s)
        targets = np.full((batch, num_classes), smoothing / num_classes, np.float32)
        targets[np.arange(batch), labels] += 1. - smoothing
        out.append((make_batch(batch, img_size, seed + 100 + s), targets))
    return out


def torch_optimizer(model, lr, weight_decay=recipe.RECIPE['weight_decay']):
    """torch AdamW over the recipe's groups: decay where ``recipe.applies_weight_decay``."""
    import torch
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if recipe.applies_weight_decay(name, p.shape) else no_decay).append(p)
    return torch.optim.AdamW([{'params': decay, 'weight_decay': weight_decay},
                              {'params': no_decay, 'weight_decay': 0.}],
                             lr=lr, betas=recipe.RECIPE['betas'], eps=recipe.RECIPE['eps'])


def torch_train(model, data, lrs, noise=None, clip_grad=recipe.RECIPE['clip_grad']):
    """([loss per step], [{timm_name: weights} after each step], {timm_name: gradient of the
    first step, as AdamW got it}) of torch AdamW steps; the weights include BatchNorm running
    statistics, where the model has them."""
    import torch
    from torch.nn import functional as F
    from parity.droppath import set_noise
    set_noise(model, noise)
    model.train()
    opt = torch_optimizer(model, lrs[0])
    losses, weights, first_grads = [], [], None
    for lr, (x, y) in zip(lrs, data):
        for group in opt.param_groups:
            group['lr'] = lr
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        if first_grads is None:
            first_grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters() if p.grad is not None}
        opt.step()
        losses.append(loss.item())
        weights.append({k: v.detach().numpy().copy() for k, v in model.state_dict().items()
                        if v.is_floating_point()})  # BatchNorm statistics too; not its counters
    return losses, weights, first_grads


def mindspore_train(net, data, lrs, noise=None, create_optimizer=None, keymap=None):
    """([loss per step], [{timm_name: weights} after each step]) of ``tnt_train`` steps.

    ``create_optimizer(net, lrs) -> (optimizer, lr_schedule)`` defaults to the training
    package's ``tnt_train.optim.create_optimizer``; ``keymap`` names the weights as torch
    does (default ``TIMM_TO_MINDSPORE``; a PyramidTNT: ``PYRAMID_TO_MINDSPORE``).
    """
    import mindspore as ms
    from convert.keymap import TIMM_TO_MINDSPORE
    from convert.transfer import mindspore_to_numpy
    from parity.droppath import set_noise
    from tnt_train.train_step import TrainStep
    if create_optimizer is None:
        from tnt_train.optim import create_optimizer
    set_noise(net, noise)
    net.set_train(True)
    optimizer, lr_schedule = create_optimizer(net, lrs)
    step = TrainStep(net, optimizer, lr_schedule, clip_grad=recipe.RECIPE['clip_grad'])
    losses, weights = [], []
    for x, y in data:
        losses.append(float(step(ms.Tensor(x), ms.Tensor(y))[0].asnumpy()))
        weights.append(mindspore_to_numpy(net, keymap or TIMM_TO_MINDSPORE))
    return losses, weights


def rounding_elements(first_grads, resolution=GRADIENT_RESOLUTION):
    """{name: boolean mask} of the elements whose first-step gradient is below ``resolution``
    times its tensor's largest: their first AdamW step has the rounding's direction. Later
    steps divide by a ``√v̂`` that holds the earlier gradients, so a gradient at rounding
    level there moves an element by a fraction of a step only."""
    return {k: np.abs(g) < resolution * np.abs(g).max() for k, g in first_grads.items()}


def compare_training(test, ref, initial, loss_bound=LOSS_BOUND, update_bound=UPDATE_BOUND,
                     element_bound=ELEMENT_BOUND, exact=None, exact_factor=EXACT_FACTOR):
    """Per-step report of (losses, weights) against the reference ``(losses, weights,
    first-step gradients)`` (``torch_train``), from common ``initial`` weights.

    Losses: ``|Δloss| / |loss| <= loss_bound``. Weights: per tensor, the updates since
    ``initial`` (u) must agree for the typical element, ``median|u_test - u_ref| /
    median|u_ref| <= update_bound``, and for every element, ``max|u_test - u_ref| /
    max|u_ref| <= element_bound`` (row key ``rel``), over the elements but those of
    ``rounding_elements`` (their count: row key ``left_out``); the max-abs error of the
    weights is reported beside them. ``exact``: the same run of torch in float64 (``(losses,
    weights, gradients)``); a tensor over ``update_bound`` passes the median check if its update's
    median distance from the exact one is at most ``exact_factor`` times the reference's (row
    keys ``exact_rel_median``, ``ref_exact_rel_median``).
    """
    rounding = rounding_elements(ref[2])
    steps = []
    for s, (lt, lr_, wt, wr) in enumerate(zip(test[0], ref[0], test[1], ref[1])):
        delta_t = {k: wt[k] - initial[k] for k in wr}
        delta_r = {k: wr[k] - initial[k] for k in wr}
        rows = compare_tensors(delta_t, delta_r)
        for row in rows:
            name = row['name']
            row['weight_max_abs'] = max_abs_err(wt[name], wr[name])
            kept = ~rounding.get(name, np.zeros(wr[name].shape, bool))
            row['size'], row['left_out'] = kept.size, int(kept.size - kept.sum())
            row['rel'] = rel_err(delta_t[name][kept], delta_r[name][kept])
            row['median_ok'] = row['rel_median'] <= update_bound
            if exact is not None and not row['median_ok']:
                delta_e = exact[1][s][name] - initial[name]
                row['exact_rel_median'] = median_rel_err(delta_t[name], delta_e)
                row['ref_exact_rel_median'] = median_rel_err(delta_r[name], delta_e)
                row['median_ok'] = row['exact_rel_median'] <= exact_factor * row['ref_exact_rel_median']
        failing = [r['name'] for r in rows if not (r['median_ok'] and r['rel'] <= element_bound)]
        loss_rel = rel_err(lt, lr_)
        steps.append(dict(step=s, loss=lt, loss_ref=lr_, loss_rel=loss_rel, rows=rows,
                          left_out=sum(r['left_out'] for r in rows), most_left_out=worst(rows, 'left_out'),
                          worst=worst(rows, 'rel_median'), worst_element=worst(rows, 'rel'), failing=failing,
                          passed=not failing and loss_rel <= loss_bound))
    return dict(steps=steps, loss_bound=loss_bound, update_bound=update_bound, element_bound=element_bound,
                passed=len(steps) == len(ref[0]) and all(s['passed'] for s in steps))


def describe_training(report):
    lines = []
    for s in report['steps']:
        w, e, m = s['worst'], s['worst_element'], s['most_left_out']
        lines.append(f"step {s['step']}: loss {s['loss']:.6f} vs {s['loss_ref']:.6f} (rel {s['loss_rel']:.2e}); "
                     f"worst update {w['name']} median rel {w['rel_median']:.2e}, "
                     f"worst element {e['name']} rel {e['rel']:.2e}, "
                     f"{s['left_out']} elements left out as rounding (most: {m['name']}, "
                     f"{m['left_out']} of {m['size']}), "
                     f"max|Δw| over all tensors {max(r['weight_max_abs'] for r in s['rows']):.2e}"
                     + ('' if s['passed'] else f"  FAIL: {', '.join(s['failing'][:4])}"))
    return '\n'.join(lines)


def run_training(name, batch=2, steps=STEPS, seed=0, create_optimizer=None, models=None, mode='pynative',
                 exact=False):
    """(report, MindSpore (losses, weights), torch (losses, weights)) for variant ``name``
    (TNT or PyramidTNT, whose BatchNorms train on the batch's statistics).

    ``mode`` 'graph' runs MindSpore's step in GRAPH mode with drop path off: the shared masks
    are a PYNATIVE hook (PyramidTNT's gradients agree in GRAPH mode only, docs/ptnt.md).
    ``exact``: torch also runs in float64, for ``compare_training``'s ``exact``.
    """
    from convert.keymap import PYRAMID_TO_MINDSPORE
    from convert.transfer import torch_to_numpy
    from parity.droppath import mindspore_noise, torch_noise
    from parity.forward import random_models, random_pyramid_models, set_mode
    from tnt_common.pyramid import STEM_STRIDE
    from tnt_common.variants import family
    set_mode(mode)
    pyramid, masks = family(name) == 'ptnt', mode == 'pynative'
    torch_model, net = models or (random_pyramid_models if pyramid else random_models)(
        name, seed, drop_path_rate=DROP_PATH if masks else 0.)
    initial = torch_to_numpy(torch_model)
    img_size = (torch_model.grid_sides[0] * STEM_STRIDE if pyramid
                else torch_model.pixel_embed.grid_size[0] * torch_model.pixel_embed.patch_size)
    data = batches(steps, batch, img_size, torch_model.num_classes, seed)
    lrs = schedule(steps)
    ms_noise, pt_noise = (mindspore_noise(seed), torch_noise(seed)) if masks else (None, None)
    test = mindspore_train(net, data, lrs, ms_noise, create_optimizer, PYRAMID_TO_MINDSPORE if pyramid else None)
    exact_ref = torch_train(copy.deepcopy(torch_model).double(),
                            [(x.astype(np.float64), y.astype(np.float64)) for x, y in data], lrs,
                            torch_noise(seed) if masks else None) if exact else None
    ref = torch_train(torch_model, data, lrs, pt_noise)
    if masks and ms_noise.source.shapes != pt_noise.source.shapes:
        raise AssertionError('the frameworks drew different drop-path masks: '
                             f'{len(ms_noise.source.shapes)} vs {len(pt_noise.source.shapes)} draws')
    report = compare_training(test, ref, initial, exact=exact_ref)
    report['mask_draws'] = len(pt_noise.source.shapes) if masks else 0
    return report, test, ref
