"""The forward parity check must catch real porting faults, at the block they are planted in.

Each test plants one fault on the MindSpore side of ``tnt_tiny_patch16_64`` (square
``proj`` weights, like S and B), runs the same comparison as test_forward_parity, and
asserts that it fails and that the first divergence is reported at the planted block.
"""
import mindspore as ms
import pytest
from mindspore import nn

import mindspore_tnt
from convert.transfer import numpy_to_mindspore, torch_to_numpy
from tnt_common.compare import compare_outputs, describe_failure
from parity.forward import set_mode
from mindspore_tnt.outputs import mindspore_outputs
from parity_tests.helpers import forward_reference

NAME = 'tnt_tiny_patch16_64'
BLOCK = 2
NORMS = ('norm_in', 'norm_mlp_in', 'norm1_proj', 'norm2_proj', 'norm_out', 'norm_mlp')


@pytest.fixture(scope='module')
def reference():
    """(timm weights, batch of 2, torch outputs) of ``helpers.forward_reference``."""
    torch_model, _, x, outputs = forward_reference(NAME)
    return torch_to_numpy(torch_model), x, outputs


def with_eps(norm, eps):
    new = nn.LayerNorm(norm.normalized_shape, epsilon=eps)
    new.gamma.set_data(norm.gamma.value())
    new.beta.set_data(norm.beta.value())
    return new


def run_fault(reference, mode, plant):
    """Load the torch weights into MindSpore, let ``plant(net)`` spoil it, compare to torch."""
    set_mode(mode)
    weights, x, ref = reference
    net = numpy_to_mindspore(weights, mindspore_tnt.create_model(NAME, weight_init='skip'))
    plant(net)
    report = compare_outputs(mindspore_outputs(net, x), ref)
    assert not report['passed'], 'the planted fault went unnoticed'
    return report['first_failure'], describe_failure(report)


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
def test_catches_transposed_square_weight(reference, mode):
    def plant(net):
        weight = net.blocks[BLOCK].proj.weight
        assert weight.shape[0] == weight.shape[1]
        weight.set_data(ms.Tensor(weight.asnumpy().T.copy()))
    failure, message = run_fault(reference, mode, plant)
    # block proj feeds the outer stream only: the inner tokens of that block still agree.
    assert (failure['stage'], failure['stream']) == (f'block {BLOCK}', 'outer'), message
    assert f'block {BLOCK} outer' in message


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
def test_catches_tanh_gelu(reference, mode):
    def plant(net):
        net.blocks[BLOCK].mlp_in.act = nn.GELU(approximate=True)
        net.blocks[BLOCK].mlp.act = nn.GELU(approximate=True)
    failure, message = run_fault(reference, mode, plant)
    assert (failure['stage'], failure['stream']) == (f'block {BLOCK}', 'inner'), message


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
def test_catches_layernorm_eps_1e7_in_first_block(reference, mode):
    # eps matters where a LayerNorm's input variance is small: the inner tokens of the
    # first block, fresh from the pixel embedding.
    def plant(net):
        for attr in NORMS:
            setattr(net.blocks[0], attr, with_eps(getattr(net.blocks[0], attr), 1e-7))
    failure, message = run_fault(reference, mode, plant)
    assert (failure['stage'], failure['stream']) == ('block 0', 'inner'), message


def test_catches_mindspore_default_layernorm_eps_everywhere(reference):
    # The classic porting slip: every nn.LayerNorm left at MindSpore's default eps 1e-7.
    def plant(net):
        for name, cell in list(net.cells_and_names()):
            if isinstance(cell, nn.LayerNorm):
                parent, _, attr = name.rpartition('.')
                owner = net if not parent else dict(net.cells_and_names())[parent]
                setattr(owner, attr, with_eps(cell, 1e-7))
    failure, message = run_fault(reference, 'pynative', plant)
    assert (failure['stage'], failure['stream']) == ('block 0', 'inner'), message
