"""PyramidTNT's two formulations, ``impl='cpu'`` (stem and merge convolutions as a gather and
a matmul, channels last) and ``impl='standard'`` (``nn.Conv2d``): the same parameters, and both
match torch_ref within ``FP32_BOUND`` at the stem, every block and every merge, in eval mode and
in a train-mode forward (BatchNorm batch statistics and running statistics). The eval-mode
forward of ``impl='cpu'``, the default on CPU, is ``test_ptnt.py``'s every-block comparison
(the same model, batch and bound, in both modes)."""
import functools

import numpy as np
import pytest
import torch

from convert.keymap import PYRAMID_TO_MINDSPORE
from convert.transfer import mindspore_to_numpy, numpy_to_mindspore
from mindspore_tnt.conv_taps import image_tap_index
from mindspore_tnt.outputs import mindspore_outputs
from mindspore_tnt.ptnt import create_model
from parity.forward import random_pyramid_models, set_mode
from tnt_common.compare import FP32_BOUND, compare_outputs, describe_failure, rel_err
from tnt_common.fixtures import make_batch
from torch_ref.outputs import torch_outputs

TINY = 'ptnt_tiny_patch16_64'


@pytest.mark.parametrize('side,stride', [(8, 2), (7, 2), (6, 1), (5, 1)])
def test_tap_index_is_the_convolution(side, stride):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, side, side)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=1).numpy()
    pixels = np.concatenate([x.transpose(0, 2, 3, 1).reshape(2, side * side, 3), np.zeros((2, 1, 3), np.float32)], 1)
    taps = pixels[:, image_tap_index(side, side, stride, 3)].reshape(2, -1, 27)
    out = taps @ w.transpose(0, 2, 3, 1).reshape(4, 27).T
    o = ref.shape[-1]
    np.testing.assert_allclose(out.reshape(2, o, o, 4).transpose(0, 3, 1, 2), ref, rtol=0, atol=1e-5)


@functools.lru_cache(maxsize=None)
def models():
    """torch_ref and the weights of a mindspore_tnt model, random, BatchNorm statistics included."""
    set_mode('graph')
    torch_model, net = random_pyramid_models(TINY)
    return torch_model, mindspore_to_numpy(net, PYRAMID_TO_MINDSPORE)


def build(impl, arrays):
    return numpy_to_mindspore(arrays, create_model(TINY, impl=impl, weight_init='skip'), PYRAMID_TO_MINDSPORE)


def test_same_parameters():
    cpu, standard = (create_model(TINY, impl=impl) for impl in ('cpu', 'standard'))
    assert [(p.name, p.shape) for p in cpu.get_parameters()] == \
        [(p.name, p.shape) for p in standard.get_parameters()]


@pytest.mark.parametrize('impl', ['standard'])
def test_forward_parity(impl):
    torch_model, arrays = models()
    set_mode('graph')
    x = make_batch(2, 64)
    ref = torch_outputs(torch_model, x)
    report = compare_outputs(mindspore_outputs(build(impl, arrays), x), ref, FP32_BOUND, torch_model.stage_names())
    assert report['passed'], describe_failure(report)


@pytest.mark.parametrize('impl', ['cpu', 'standard'])
def test_train_mode_forward_and_running_statistics(impl):
    torch_model, arrays = models()
    set_mode('pynative')
    import mindspore as ms
    x = make_batch(2, 64, seed=3)
    net = build(impl, arrays)
    net.set_train(True)
    logits = net(ms.Tensor(x)).asnumpy()
    model = torch_model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        stats = {k: v.numpy().copy() for k, v in model.state_dict().items() if 'running_' in k}
    finally:
        model.load_state_dict(state)
        model.eval()
    assert rel_err(logits, ref) <= FP32_BOUND
    got = mindspore_to_numpy(net, PYRAMID_TO_MINDSPORE)
    assert len(stats) == 10
    for k, v in stats.items():
        assert rel_err(got[k], v) <= FP32_BOUND, k
