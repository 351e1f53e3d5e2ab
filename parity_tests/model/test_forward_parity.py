"""Forward parity, fp32: embedding, inner and outer tokens after every block, and logits.

Random weights at a trained network's activation scale (``parity.weights``) go into
torch_ref, are transferred to mindspore_tnt, and both run the same batch of 2 images.
Bound for every compared tensor: ``max|ms - pt| / max|pt| <= 1e-5``; top-1 identical.
"""
import functools

import numpy as np
import pytest

from convert.transfer import mindspore_to_torch, torch_to_numpy
from tnt_common.compare import compare_outputs, describe_failure
from tnt_common.fixtures import make_batch
from parity.forward import random_models, set_mode
from mindspore_tnt.outputs import mindspore_outputs
from torch_ref.outputs import torch_outputs
from tnt_common.compare import format_rows
from tnt_common.variants import VARIANTS, list_models

import torch_ref

BATCH = 2


@functools.lru_cache(maxsize=None)
def reference(name):
    """(torch model, MindSpore net, batch, torch outputs): computed once per variant."""
    torch_model, net = random_models(name, seed=0)
    x = make_batch(BATCH, VARIANTS[name]['img_size'], seed=0)
    return torch_model, net, x, torch_outputs(torch_model, x)


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
@pytest.mark.parametrize('name', list_models())
def test_forward_parity_every_block(name, mode):
    set_mode(mode)
    _, net, x, ref = reference(name)
    out = mindspore_outputs(net, x)
    depth = VARIANTS[name]['depth']
    assert len(out[1]) == len(ref[1]) == depth + 1
    for (pm, qm), (pt, qt) in zip(out[1], ref[1]):
        assert pm.shape == pt.shape and qm.shape == qt.shape
    report = compare_outputs(out, ref)
    assert report['passed'], f'{name} [{mode}]: {describe_failure(report)}\n{format_rows(report["rows"])}'
    assert out[0].shape == (BATCH, 1000)


@pytest.mark.parametrize('name', list_models())
def test_round_trip_bit_exact(name):
    torch_model, net, _, _ = reference(name)
    before = torch_to_numpy(torch_model)
    back = mindspore_to_torch(net, torch_ref.create_model(name))
    after = torch_to_numpy(back)
    assert after.keys() == before.keys()
    for k in before:
        assert after[k].dtype == before[k].dtype and np.array_equal(after[k], before[k]), k
