"""Blocks compiled once per graph (``mindspore_tnt.reuse``): which blocks share a graph, and a
block changed after construction computes its own function in GRAPH mode. Drop path in training
is fed to the blocks, so they share a graph: each block still gets a draw and keep probability
of its own.

The planted fault is MindSpore's own key (the ``__init__`` arguments alone): with it a block
whose GELU was replaced after construction runs its siblings' graph, and GRAPH mode no longer
matches PYNATIVE.
"""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import mindspore_tnt
from mindspore_tnt import reuse
from parity.forward import set_mode
from tnt_common.fixtures import make_batch

NAME = 'tnt_tiny_patch16_64'


def keys(net):
    return [reuse.structure_key(b) for b in net.blocks]


def test_identical_blocks_share_one_key_under_a_global_seed():
    ms.set_seed(0)   # gives every dropout primitive seeds of its own: a dropout of rate 0 never runs them
    net = mindspore_tnt.create_model(NAME)
    net.set_train(False)
    assert len(set(keys(net))) == 1
    net.set_train(True)
    assert len(set(keys(net))) == 1


def test_fed_drop_path_shares_a_graph_and_a_dropout_does_not():
    net = mindspore_tnt.create_model(NAME, drop_path_rate=0.1)
    net.set_train(False)
    assert len(set(keys(net))) == 1                    # drop path is the identity in eval mode
    net.set_train(True)
    assert len(set(keys(net))) == 1                    # rates 0 to 0.1: noise and keep come in as inputs
    net = mindspore_tnt.create_model(NAME, proj_drop_rate=0.1)
    net.set_train(True)
    assert len(set(keys(net))) == len(net.blocks)      # each block's dropouts draw in the block


class FedInputs(nn.Cell):
    """The (noise, keep) every block of ``net`` is fed in training, as one compiled graph."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, x):
        out = ()
        for blk in self.net.blocks:
            out = out + self.net.drop_path_inputs(blk, x.shape[0], x.dtype)
        return out


@pytest.mark.parametrize('mode', ['graph', 'pynative'])
def test_every_block_is_fed_draws_of_its_own(mode):
    set_mode(mode)
    net = mindspore_tnt.create_model(NAME, drop_path_rate=0.3)
    net.set_train(True)
    draws = FedInputs(net)
    x = ms.Tensor(np.zeros((2, 1), np.float32))
    first, second = ([t.asnumpy() for t in draws(x)] for _ in range(2))
    rows = 2 * 2 * net.num_patches + 2 * 2
    for out in (first, second):
        noise, keep = out[0::2], out[1::2]
        assert [k.tolist() for k in keep] == [[np.float32(1. - b.drop_path.drop_prob)] for b in net.blocks]
        assert all(n.shape == (rows,) for n in noise)
        assert not noise[0].any()                                   # rate 0: zeros, x / 1 * 1
        assert all(0. <= n.min() and n.max() < 1. for n in noise)
        assert len({n.tobytes() for n in noise[1:]}) == 3           # no two blocks share a draw
    assert not any(np.array_equal(a, b) for a, b in zip(first[2::2], second[2::2]))   # new draws each call


def test_changes_after_construction_change_the_key():
    net = mindspore_tnt.create_model(NAME)
    before = keys(net)
    net.blocks[1].mlp_in.act = nn.ReLU()
    net.blocks[2].attn_out.scale_q = not net.blocks[2].attn_out.scale_q
    after = keys(net)
    assert after[0] == before[0] and after[3:] == before[3:]
    assert len({after[0], after[1], after[2]}) == 3


def graph_and_pynative(net, x):
    set_mode('graph')
    graph = net(x).asnumpy()
    set_mode('pynative')
    return graph, net(x).asnumpy()


@pytest.mark.parametrize('key', ['structure', 'init arguments'])
def test_a_block_changed_after_construction_runs_its_own_graph(key, monkeypatch):
    if key == 'init arguments':    # the planted fault: every block of the same arguments shares one graph
        monkeypatch.setattr(reuse, 'structure_key', lambda cell: 'init arguments')
    ms.set_seed(0)
    net = mindspore_tnt.create_model(NAME)
    net.set_train(False)
    net.blocks[1].mlp_in.act = nn.ReLU()
    graph, pynative = graph_and_pynative(net, ms.Tensor(make_batch(2, 64, seed=0)))
    if key == 'structure':
        assert np.array_equal(graph, pynative)
    else:
        assert np.abs(graph - pynative).max() > 1e-4


def test_blocks_are_keyed_only_on_the_devices_where_reuse_ran(monkeypatch):
    block = mindspore_tnt.create_model(NAME).blocks[0]
    assert block._cell_init_args == f'lazy_inline_Block_{reuse.structure_key(block)}'
    monkeypatch.setattr(reuse, 'DEVICES', ('Ascend',))    # as on a GPU: no key, compiled as any cell
    assert not hasattr(block, '_cell_init_args')
