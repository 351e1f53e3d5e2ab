"""GRAPH against PYNATIVE mode: the same MindSpore model, forward (every stage, logits, loss)
within 1e-6 relative -- on CPU bit for bit -- and backward (every parameter gradient, the
input gradient) within 1e-5 (graph mode's compiled backward rounds differently)."""
import numpy as np
import pytest

from parity.modes import MODE_GRAD_BOUND, compare_modes, describe_modes
from parity_tests.runs import mindspore_run


@pytest.mark.parametrize('name', ['tnt_tiny_patch16_64', 'tnt_s_patch16_224'])
def test_graph_matches_pynative(name):
    runs = {mode: mindspore_run(name, mode) for mode in ('pynative', 'graph')}
    report = compare_modes(runs)
    assert report['passed'], describe_modes(report)
    assert report['forward_bit_exact'], describe_modes(report)
    assert max(r['rel'] for r in report['grad_rows']) <= MODE_GRAD_BOUND
    print(describe_modes(report))


def test_catches_a_difference_in_one_gradient():
    runs = {mode: mindspore_run('tnt_tiny_patch16_64', mode) for mode in ('pynative', 'graph')}
    forward, (loss, grads, dx) = runs['graph']
    spoilt = dict(grads)
    g = spoilt['blocks.2.mlp.fc1.weight'].copy()
    g.flat[int(np.argmax(np.abs(g)))] *= 1 + 1e-4
    spoilt['blocks.2.mlp.fc1.weight'] = g
    report = compare_modes({'pynative': runs['pynative'], 'graph': (forward, (loss, spoilt, dx))})
    assert not report['passed'] and not report['bit_exact']
    assert report['failing'] == ['grad blocks.2.mlp.fc1.weight'], describe_modes(report)
