"""Forward parity: the same weights and batch through both frameworks, every stage compared."""
import numpy as np

from tnt_common.compare import compare_stages, first_failure, rel_err

FP32_BOUND = 1e-5


def set_mode(mode):
    """Select MindSpore's execution mode on CPU: 'graph' or 'pynative'."""
    import mindspore as ms
    ms.set_device('CPU')
    ms.set_context(mode={'graph': ms.GRAPH_MODE, 'pynative': ms.PYNATIVE_MODE}[mode])


def make_batch(batch, img_size, seed=0):
    """A deterministic batch in the model's input range (mean = std = 0.5 normalisation)."""
    rng = np.random.default_rng(seed)
    return ((rng.random((batch, 3, img_size, img_size)) - 0.5) / 0.5).astype(np.float32)


def torch_outputs(model, x):
    """(logits, ((inner, outer), ...)) of a torch TNT as numpy, in eval mode."""
    import torch
    model.eval()
    with torch.no_grad():
        features, stages = model.forward_stages(torch.from_numpy(x))
        logits = model.forward_head(features)
    return logits.numpy(), tuple((p.numpy(), q.numpy()) for p, q in stages)


def mindspore_outputs(net, x):
    """(logits, ((inner, outer), ...)) of a MindSpore TNT as numpy, in eval mode."""
    import mindspore as ms
    from mindspore_tnt import WithStages
    net.set_train(False)
    logits, stages = WithStages(net)(ms.Tensor(x))
    return logits.asnumpy(), tuple((p.asnumpy(), q.asnumpy()) for p, q in stages)


def compare_outputs(test, ref, bound=FP32_BOUND):
    """Report of one comparison: per-stage rows, logits error, top-1 agreement, verdict."""
    rows = compare_stages(test[1], ref[1])
    logits_rel = rel_err(test[0], ref[0])
    top1_same = bool(np.all(test[0].argmax(-1) == ref[0].argmax(-1)))
    failure = first_failure(rows, bound)
    return dict(rows=rows, logits_rel=logits_rel, top1_same=top1_same, first_failure=failure,
                passed=failure is None and logits_rel <= bound and top1_same)


def describe_failure(report, bound=FP32_BOUND):
    f = report['first_failure']
    if f is not None:
        return (f"{f['stage']} {f['stream']} tokens diverged first: rel err {f['rel']:.3e} > {bound:.0e} "
                f"(max|d| {f['max_abs']:.3e}, cosine {f['cos']:.9f})")
    if report['logits_rel'] > bound:
        return f"logits diverged: rel err {report['logits_rel']:.3e} > {bound:.0e}"
    if not report['top1_same']:
        return 'logits top-1 differs'
    return 'no divergence'


def random_models(name, seed=0, **kwargs):
    """A torch_ref and a mindspore_tnt model of ``name`` holding the same random weights."""
    import mindspore_tnt
    import torch_ref
    from convert.transfer import numpy_to_mindspore, numpy_to_torch
    from parity.weights import random_timm_weights
    torch_model = torch_ref.create_model(name, **kwargs)
    weights = random_timm_weights({k: v.shape for k, v in torch_model.state_dict().items()}, seed)
    numpy_to_torch(weights, torch_model)
    net = numpy_to_mindspore(weights, mindspore_tnt.create_model(name, **kwargs))
    return torch_model, net
