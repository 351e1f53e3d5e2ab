"""Forward parity, fp32: embedding, inner and outer tokens after every block, and logits.

Random weights at a trained network's activation scale (``tnt_common.fixtures``) go into
torch_ref, are transferred to mindspore_tnt, and both run the same batch of 2 images
(``helpers.forward_reference``, shared with the other model suites).
Bound for every compared tensor: ``max|ms - pt| / max|pt| <= 1e-5``; top-1 identical.
Every variant runs in PyNative mode and all but TNT-B in GRAPH mode too: B's graph is S's
graph (same 224 geometry, code and kernels) at other widths, which B's PyNative run checks.
"""
import numpy as np
import pytest

from convert.transfer import mindspore_to_torch, torch_to_numpy
from tnt_common.compare import compare_outputs, describe_failure
from parity.forward import set_mode
from mindspore_tnt.outputs import mindspore_outputs
from parity_tests.helpers import BATCH, forward_reference
from tnt_common.compare import format_rows
from tnt_common.variants import VARIANTS, list_models

import torch_ref

RUNS = [(name, mode) for name in list_models() for mode in ('pynative', 'graph')
        if not (name == 'tnt_b_patch16_224' and mode == 'graph')]


@pytest.mark.parametrize('name, mode', RUNS)
def test_forward_parity_every_block(name, mode):
    set_mode(mode)
    _, net, x, ref = forward_reference(name)
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
    torch_model, net, _, _ = forward_reference(name)
    before = torch_to_numpy(torch_model)
    back = mindspore_to_torch(net, torch_ref.create_model(name, weight_init='skip'))
    after = torch_to_numpy(back)
    assert after.keys() == before.keys()
    for k in before:
        assert after[k].dtype == before[k].dtype and np.array_equal(after[k], before[k]), k
