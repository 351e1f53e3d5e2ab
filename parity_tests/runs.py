"""Runs shared by the gradient, graph-vs-pynative and AMP suites, computed once per session."""
import functools

from convert.transfer import torch_to_numpy
from parity.forward import make_batch, random_models, torch_outputs
from parity.gradients import make_labels, torch_gradients
from tnt_common.variants import VARIANTS

BATCH = 2


@functools.lru_cache(maxsize=None)
def reference(name):
    """(timm weights, images, labels, torch forward outputs, torch (loss, grads, input grad))."""
    torch_model, _ = random_models(name, seed=0)
    x = make_batch(BATCH, VARIANTS[name]['img_size'], seed=0)
    y = make_labels(BATCH, torch_model.num_classes, seed=0)
    return torch_to_numpy(torch_model), x, y, torch_outputs(torch_model, x), torch_gradients(torch_model, x, y)


def fresh_net(name, impl=None):
    """A new MindSpore TNT (of formulation ``impl``, default the device's) holding ``reference(name)``'s weights."""
    import mindspore_tnt
    from convert.transfer import numpy_to_mindspore
    return numpy_to_mindspore(reference(name)[0], mindspore_tnt.create_model(name, impl=impl))


@functools.lru_cache(maxsize=None)
def mindspore_run(name, mode):
    """(forward outputs, (loss, grads, input grad)) of the MindSpore model in ``mode``."""
    from parity.forward import mindspore_outputs, set_mode
    from parity.gradients import mindspore_gradients
    _, x, y, _, _ = reference(name)
    net = fresh_net(name)
    set_mode(mode)
    return mindspore_outputs(net, x), mindspore_gradients(net, x, y)
