"""A model's logits and every stage, as numpy, for comparisons with the other framework."""
import mindspore as ms

from mindspore_tnt.tnt import WithStages


def mindspore_outputs(net, x):
    """(logits, ((inner, outer), ...)) of a MindSpore TNT on the numpy batch ``x``, as numpy, in eval mode."""
    net.set_train(False)
    logits, stages = WithStages(net)(ms.Tensor(x))
    return logits.asnumpy(), tuple((p.asnumpy(), q.asnumpy()) for p, q in stages)
