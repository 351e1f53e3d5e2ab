"""GRAPH against PYNATIVE mode: the same MindSpore model, forward (every stage, logits, loss)
and backward (every parameter gradient, the input gradient) within 1e-6 relative, and
measured bit for bit on CPU.

The one source of difference between the modes is the order in which they add the gradient
terms of a tensor with three or more consumers (``test_three_gradient_consumers_add_in_different_orders``);
the model and the loss are written so that no tensor has more than two, and everything else
(kernels, fusions, reductions) is the same in both modes, so the test asserts bit for bit.
"""
import numpy as np
import pytest

from parity.modes import compare_modes, describe_modes, fan_in_orders
from parity_tests.runs import mindspore_run


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
