"""Gradient parity: the same weights, batch and labels, label-smoothed cross-entropy, backward
in both frameworks; every parameter's gradient and the input gradient compared. TNT and
PyramidTNT alike (a PyramidTNT's BatchNorms normalise with the batch's statistics)."""
import numpy as np

from tnt_common.compare import compare_tensors, rel_err, rel_to, worst
from tnt_common.recipe import RECIPE

SMOOTHING = RECIPE['smoothing']
GRAD_BOUND = 1e-4
AMP_LOSS_SCALE = 2. ** 16    # the first loss scale tried at an AMP level (torch's GradScaler starts there)


def make_labels(batch, num_classes, seed=0):
    """Deterministic class labels for ``make_batch``'s images."""
    return np.random.default_rng(seed + 1).integers(0, num_classes, batch).astype(np.int32)


def torch_gradients(model, x, y, smoothing=SMOOTHING):
    """(loss, {timm_name: grad}, input grad) of a torch TNT in training mode, as numpy."""
    import torch
    from torch.nn import functional as F
    model.train()
    model.zero_grad(set_to_none=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    loss = F.cross_entropy(model(xt), torch.from_numpy(y).long(), label_smoothing=smoothing)
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
    return loss.item(), grads, xt.grad.numpy().copy()


def loss_cell(net, smoothing=SMOOTHING):
    """``net`` followed by label-smoothed cross-entropy on integer labels, as one Cell.

    torch's formula, ``(1 - s) * nll + s * mean(-log p)``, on one LogSoftmax: ``ops.cross_entropy``
    computes log p as ``x - logsumexp(x)``, which gives the logits three gradient consumers,
    summed in a different order in GRAPH and PYNATIVE mode (docs/parity.md).
    """
    from mindspore import nn, ops

    class WithLoss(nn.Cell):
        def __init__(self, backbone):
            super().__init__(auto_prefix=False)
            self.backbone = backbone

        def construct(self, x, y):
            logp = ops.log_softmax(self.backbone(x), axis=-1)
            nll = -ops.gather_elements(logp, 1, y.reshape(-1, 1)).mean()
            return (1 - smoothing) * nll - smoothing * logp.mean()

    return WithLoss(net)


def grad_cell(cell, params):
    """A Cell returning (loss, input grad, parameter grads) of ``cell(x, y, *scale)``; one graph in GRAPH mode."""
    import mindspore as ms
    from mindspore import nn

    class WithGrads(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.cell = cell
            self.grad_fn = ms.value_and_grad(cell, grad_position=0, weights=params)

        def construct(self, x, y, *scale):
            loss, (dx, grads) = self.grad_fn(x, y, *scale)
            return loss, dx, grads

    return WithGrads()


def scaled(cell):
    """``cell(x, y) * scale`` in fp32: the loss scaling of a mixed-precision backward."""
    import mindspore as ms
    from mindspore import nn

    class Scaled(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.cell = cell

        def construct(self, x, y, scale):
            return self.cell(x, y).astype(ms.float32) * scale

    return Scaled()


def mindspore_gradients(net, x, y, smoothing=SMOOTHING, wrap=None, keymap=None, loss_scale=None):
    """(loss, {timm_name: grad}, input grad) of a MindSpore TNT in training mode, as numpy.

    ``wrap`` (e.g. an AMP level's ``apply_amp``) is applied to the loss cell before the
    gradient is taken, and the loss is then scaled as training scales it: gradients below
    fp16's smallest normal number (6.1e-5; timm's initialisation gives many) lose their bits
    in an fp16 backward. The scale starts at ``loss_scale`` (default ``AMP_LOSS_SCALE``) and
    halves while a gradient is not finite (a dynamic loss scaler's back-off); the gradients
    and loss are divided by it again. ``keymap`` names the gradients as torch does (default
    ``TIMM_TO_MINDSPORE``; a PyramidTNT: ``PYRAMID_TO_MINDSPORE``).
    """
    import mindspore as ms
    from convert.keymap import TIMM_TO_MINDSPORE
    keymap = keymap or TIMM_TO_MINDSPORE
    net.set_train(True)
    cell = loss_cell(net, smoothing)
    params = net.trainable_params()
    if wrap is None:
        loss, dx, grads = grad_cell(cell, params)(ms.Tensor(x), ms.Tensor(y))
        scale, dx, grads = 1., dx.asnumpy(), [g.asnumpy() for g in grads]
    else:
        step, scale = grad_cell(scaled(wrap(cell)), params), loss_scale or AMP_LOSS_SCALE
        while True:
            loss, dx, grads = step(ms.Tensor(x), ms.Tensor(y), ms.Tensor(scale, ms.float32))
            dx, grads = dx.asnumpy(), [g.asnumpy() for g in grads]
            if scale <= 1 or all(np.isfinite(g).all() for g in [dx, *grads]):
                break
            scale /= 2
    named = {keymap.backward(p.name): g / np.float32(scale) for p, g in zip(params, grads)}
    return float(loss.asnumpy()) / scale, named, dx / np.float32(scale)


def zero_gradient_scales(model):
    """``{bias name: weight name}`` of the convolutions of a torch model that feed a BatchNorm
    directly (PyramidTNT's stem): in training mode the BatchNorm subtracts the batch mean, so
    such a bias has a zero gradient up to rounding; only its error against the scale of its
    convolution's weight gradient means anything."""
    import torch
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Sequential):
            layers = list(module.named_children())
            for (a, conv), (_, norm) in zip(layers, layers[1:]):
                if isinstance(conv, torch.nn.Conv2d) and conv.bias is not None and \
                        isinstance(norm, torch.nn.BatchNorm2d):
                    out[f'{name}.{a}.bias'] = f'{name}.{a}.weight'
    return out


def compare_gradients(test, ref, bound=GRAD_BOUND, scales=None):
    """Report of (loss, grads, input grad) against the reference: per-tensor rows, verdict.

    Every parameter gradient and the input gradient must satisfy
    ``max|test - ref| / max|ref| <= bound``; the loss too. ``scales`` (``zero_gradient_scales``):
    gradients that are zero up to rounding, judged as ``max|test - ref| / max|ref of the named
    tensor|`` instead (the row's ``scale_rel``, ``scale_of``).
    """
    rows = compare_tensors(test[1], ref[1])
    for r in rows:
        if scales and r['name'] in scales:
            r['scale_of'] = scales[r['name']]
            r['scale_rel'] = rel_to(test[1][r['name']], ref[1][r['name']], ref[1][scales[r['name']]])
    input_row = compare_tensors({'input': test[2]}, {'input': ref[2]})[0]
    loss_rel = rel_err(test[0], ref[0])
    failing = [r['name'] for r in rows + [input_row] if not r.get('scale_rel', r['rel']) <= bound]
    return dict(rows=rows, input=input_row, loss=test[0], loss_ref=ref[0], loss_rel=loss_rel,
                worst=worst([r for r in rows if 'scale_of' not in r] or rows), failing=failing, bound=bound,
                passed=not failing and loss_rel <= bound)


def describe_gradients(report):
    """One line: the verdict and the worst tensor."""
    w, i = report['worst'], report['input']
    head = 'gradients agree' if report['passed'] else f"gradients differ in {len(report['failing'])} tensor(s) " \
                                                    f"({', '.join(report['failing'][:4])})"
    return (f"{head}: worst {w['name']} rel {w['rel']:.3e} (cos {w['cos']:.7f}), input rel {i['rel']:.3e}, "
            f"loss {report['loss']:.6f} vs {report['loss_ref']:.6f} (bound {report['bound']:.0e})")
