"""Forward parity: the same weights and batch through both frameworks, every stage compared."""


def set_mode(mode):
    """Select MindSpore's execution mode on CPU: 'graph' or 'pynative'."""
    import mindspore as ms
    ms.set_device('CPU')
    ms.set_context(mode={'graph': ms.GRAPH_MODE, 'pynative': ms.PYNATIVE_MODE}[mode])


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


def random_models(name, seed=0, **kwargs):
    """A torch_ref and a mindspore_tnt model of ``name`` holding the same random weights."""
    import mindspore_tnt
    import torch_ref
    from convert.transfer import numpy_to_mindspore, numpy_to_torch
    from tnt_common.fixtures import random_timm_weights
    torch_model = torch_ref.create_model(name, **kwargs)
    weights = random_timm_weights({k: v.shape for k, v in torch_model.state_dict().items()}, seed)
    numpy_to_torch(weights, torch_model)
    net = numpy_to_mindspore(weights, mindspore_tnt.create_model(name, **kwargs))
    return torch_model, net
