"""A model's logits and every stage, as numpy, for comparisons with the other framework."""
import torch


def torch_outputs(model, x):
    """(logits, ((inner, outer), ...)) of a torch TNT on the numpy batch ``x``, as numpy, in eval mode."""
    model.eval()
    with torch.no_grad():
        features, stages = model.forward_stages(torch.from_numpy(x))
        logits = model.forward_head(features)
    return logits.numpy(), tuple((p.numpy(), q.numpy()) for p, q in stages)
