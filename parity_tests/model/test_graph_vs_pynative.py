"""GRAPH against PYNATIVE mode: the same MindSpore model, forward (every stage, logits, loss)
and backward (every parameter gradient, the input gradient) within 1e-6 relative, and
measured bit for bit on CPU; and three steps of the training package's compiled train step
(drop path with host-fed masks, clipping, AdamW), bit for bit.

The one source of difference between the modes is the order in which they add the gradient
terms of a tensor with three or more consumers (``test_three_gradient_consumers_add_in_different_orders``);
the model and the loss are written so that no tensor has more than two, and everything else
(kernels, fusions, reductions) is the same in both modes, so the test asserts bit for bit.
The model runs as tnt_tiny and as TNT-S, whose real 224 shapes are the kernels' real work;
the train step, whose code does not depend on the size, as tnt_tiny.
"""
import functools

import numpy as np
import pytest

from tnt_common.fixtures import make_batch
from parity.forward import set_mode
from parity.modes import compare_modes, describe_modes, fan_in_orders
from parity_tests.helpers import mindspore_run, shared_drop_path_step


@pytest.mark.parametrize('name', ['tnt_tiny_patch16_64', 'tnt_s_patch16_224'])
def test_graph_matches_pynative(name):
    runs = {mode: mindspore_run(name, mode) for mode in ('pynative', 'graph')}
    report = compare_modes(runs)
    assert report['passed'], describe_modes(report)
    assert report['bit_exact'], describe_modes(report)
    print(describe_modes(report))


def test_three_gradient_consumers_add_in_different_orders():
    orders, differ = fan_in_orders()
    assert orders[2] == {'pynative': '1+2', 'graph': '1+2'}
    assert orders[3] == {'pynative': '1+(2+3)', 'graph': '(1+2)+3'}
    assert differ > 0.1


def spoil(runs, name, factor):
    """``runs`` with the largest element of gradient ``name`` in graph mode multiplied by ``factor``."""
    forward, (loss, grads, dx) = runs['graph']
    spoilt = dict(grads)
    g = spoilt[name].copy()
    g.flat[int(np.argmax(np.abs(g)))] *= factor
    spoilt[name] = g
    return {'pynative': runs['pynative'], 'graph': (forward, (loss, spoilt, dx))}


def test_catches_a_difference_in_one_gradient():
    runs = {mode: mindspore_run('tnt_tiny_patch16_64', mode) for mode in ('pynative', 'graph')}
    report = compare_modes(spoil(runs, 'blocks.2.mlp.fc1.weight', 1 + 1e-4))
    assert not report['passed'] and not report['bit_exact']
    assert report['failing'] == ['grad blocks.2.mlp.fc1.weight'], describe_modes(report)


def test_catches_one_rounding_in_one_gradient():
    runs = {mode: mindspore_run('tnt_tiny_patch16_64', mode) for mode in ('pynative', 'graph')}
    report = compare_modes(spoil(runs, 'pixel_embed.proj.bias', 1 + 2 ** -23))
    assert report['passed'] and not report['bit_exact']
    assert report['not_bit_exact'] == ['grad pixel_embed.proj.bias'], describe_modes(report)


@functools.lru_cache(maxsize=None)
def train_steps(mode, noise_offset=0, steps=3):
    """Loss and gradient norm of ``steps`` steps of ``tnt_train``'s compiled train step (drop
    path 0.3 with host-fed masks, clipping, AdamW; ``helpers.shared_drop_path_step``) from its
    initial state, and the final weights."""
    import mindspore as ms
    from convert.transfer import mindspore_to_numpy
    set_mode(mode)
    net, step, noise, reset = shared_drop_path_step(mode)
    reset()
    targets = ms.Tensor(np.eye(10, dtype=np.float32)[[1, 2, 3, 4]] * 0.9 + 0.01)
    curve = []
    for k in range(steps):
        fed = noise.host_noise(0, k + noise_offset, 0)
        loss, grad_norm = step(ms.Tensor(make_batch(4, 32, seed=k)), targets, fed)[:2]
        curve.append((float(loss.asnumpy()), float(grad_norm.asnumpy())))
    return curve, mindspore_to_numpy(net)


def test_train_step_graph_matches_pynative():
    (graph_curve, graph_weights), (pynative_curve, pynative_weights) = train_steps('graph'), train_steps('pynative')
    assert graph_curve == pynative_curve
    assert all(np.array_equal(graph_weights[k], pynative_weights[k]) for k in graph_weights)


def test_train_step_comparison_catches_other_masks():
    """PyNative fed the next step's drop-path masks: the first loss already differs."""
    graph_curve, shifted_curve = train_steps('graph')[0], train_steps('pynative', noise_offset=1)[0]
    assert graph_curve[0][0] != shifted_curve[0][0]
