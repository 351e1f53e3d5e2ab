"""Gradient parity, fp32: label-smoothed (0.1) cross-entropy, backward in both frameworks.

Every parameter gradient and the input gradient: ``max|ms - pt| / max|pt| <= 1e-4``;
dropout and drop path off. The planted faults show the check catches a gradient path
that the forward comparison cannot see. TNT-S and the legacy TNT-S run at the real 224
geometry, tnt_tiny carries the faults; TNT-B is left out: its backward is TNT-S's code at
that geometry, only wider (640/40, 10 heads), which B's forward parity checks.
"""
import pytest
from mindspore import nn, ops

from tnt_common.compare import compare_outputs
from parity.forward import set_mode
from mindspore_tnt.outputs import mindspore_outputs
from parity.gradients import compare_gradients, describe_gradients, mindspore_gradients
from parity_tests.helpers import StopGradient, fresh_net, mindspore_run, reference

VARIANTS = ['tnt_tiny_patch16_64', 'tnt_s_patch16_224', 'tnt_s_legacy_patch16_224']
NAME = 'tnt_tiny_patch16_64'


@pytest.mark.parametrize('name', VARIANTS)
def test_gradient_parity(name):
    ref = reference(name)[4]
    test = mindspore_run(name, 'pynative')[1]
    report = compare_gradients(test, ref)
    assert report['passed'], describe_gradients(report)
    assert min(r['ref_max'] for r in report['rows']) > 0  # no vacuous all-zero gradient


class DetachedInput(nn.Cell):
    """``cell`` applied to a detached copy of its input: its parameters still learn, the
    residual stream below it no longer receives its gradient."""

    def __init__(self, cell):
        super().__init__(auto_prefix=False)
        self.cell = cell

    def construct(self, x):
        return self.cell(ops.stop_gradient(x))


def planted(plant):
    """(forward report, gradient report) of the tiny model with ``plant(net)`` applied."""
    set_mode('pynative')
    _, x, y, ref_out, ref_grads = reference(NAME)
    net = fresh_net(NAME)
    names = {id(p): p.name for p in net.get_parameters()}
    plant(net)
    for p in net.get_parameters():  # setting a sub-cell renames its parameters: undo that
        p.name = names[id(p)]
    forward = compare_outputs(mindspore_outputs(net, x), ref_out)
    return forward, compare_gradients(mindspore_gradients(net, x, y), ref_grads)


def test_catches_stop_gradient_in_one_block():
    def plant(net):
        net.blocks[1].mlp_in = StopGradient(net.blocks[1].mlp_in)
    forward, grads = planted(plant)
    assert forward['passed'], 'the plant must leave the forward pass intact'
    assert not grads['passed']
    assert {'blocks.1.mlp_in.fc1.weight', 'blocks.1.mlp_in.fc2.bias'} <= set(grads['failing'])
    # what comes after the cut in the forward order keeps its gradient; what comes before loses
    # the share that flowed through the cut branch
    assert not {'blocks.1.norm1_proj.weight', 'blocks.2.attn_in.qk.weight', 'head.weight'} & set(grads['failing'])
    assert 'blocks.0.attn_in.qk.weight' in grads['failing']


def test_catches_detached_branch():
    def plant(net):
        net.blocks[2].attn_out = DetachedInput(net.blocks[2].attn_out)
    forward, grads = planted(plant)
    assert forward['passed'] and not grads['passed']
    # the branch's own weights are right; what lies below it in the graph is not
    assert 'blocks.2.attn_out.qk.weight' not in grads['failing']
    assert 'blocks.1.mlp.fc1.weight' in grads['failing'] and 'cls_token' in grads['failing']
