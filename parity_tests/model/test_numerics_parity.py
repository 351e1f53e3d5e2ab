"""Numerics as constructor arguments: every preset is at parity, a mismatch of each setting is caught.

``torch_ref`` and ``mindspore_tnt`` built with the same ``tnt_common.numerics`` preset
(pytorch, mindcv, zoo) and the same random weights (``tnt_common.fixtures``) pass the forward
parity bound of test_forward_parity on ``tnt_tiny_patch16_64``, every stage and the logits,
in both MindSpore modes. MindSpore built with one setting off fails it: erf GELU where
torch uses tanh, block and stem LayerNorm eps 1e-5 where torch uses 1e-7, final-norm eps
1e-5 where torch uses 1e-7.

The final norm reads outer tokens of variance about one at the random-weight scale, where
its eps moves the logits about 1e-6 relative, under the bound. Its test gives both
frameworks weights whose outer stream is shrunk by ``OUTER_SCALE`` (``cls_token``,
``patch_pos`` and the output layer of every branch that adds to the outer stream), so that
the final norm's input variance is of the order of its eps.
"""
import dataclasses
import functools

import mindspore as ms
import numpy as np
import pytest
import torch

import mindspore_tnt
import torch_ref
from convert.layouts import timm_shapes
from convert.transfer import numpy_to_mindspore, numpy_to_torch
from mindspore_tnt.gelu import GELU
from tnt_common.compare import FP32_BOUND, compare_outputs, describe_failure
from tnt_common.fixtures import make_batch
from parity.forward import set_mode
from mindspore_tnt.outputs import mindspore_outputs
from torch_ref.outputs import torch_outputs
from tnt_common.fixtures import random_timm_weights
from tnt_common.compare import format_rows
from tnt_common.numerics import PRESETS, PYTORCH

NAME = 'tnt_tiny_patch16_64'
MODES = ('pynative', 'graph')
OUTER_SCALE = 1e-3
# parameters whose outputs are added to the outer stream: the stem's and every block's
# norm2_proj (the sentence embedding), the outer attention's and the outer MLP's output layer
OUTER_OUTPUTS = ('norm2_proj.weight', 'norm2_proj.bias', 'attn_out.proj.weight', 'attn_out.proj.bias',
                 'mlp.fc2.weight', 'mlp.fc2.bias')
MINDCV, ZOO = PRESETS['mindcv'], PRESETS['zoo']


@functools.lru_cache(maxsize=None)
def weights(outer_scale=1.):
    """Random timm-named weights, the outer stream's sources multiplied by ``outer_scale``."""
    shapes = timm_shapes(NAME)
    w = random_timm_weights(shapes, seed=0)
    return {k: v * np.float32(outer_scale) if k in ('cls_token', 'patch_pos') or k.endswith(OUTER_OUTPUTS) else v
            for k, v in w.items()}


@functools.lru_cache(maxsize=None)
def batch():
    return make_batch(2, 64, seed=0)


@functools.lru_cache(maxsize=None)
def torch_reference(numerics, outer_scale=1.):
    """Outputs of torch_ref built with ``numerics``, on ``weights(outer_scale)``."""
    model = torch_ref.create_model(NAME, weight_init='skip', **numerics.model_kwargs())
    numpy_to_torch(weights(outer_scale), model)
    return torch_outputs(model, batch())


@functools.lru_cache(maxsize=None)
def mindspore_net(numerics, outer_scale=1.):
    return numpy_to_mindspore(weights(outer_scale), mindspore_tnt.create_model(NAME, **numerics.model_kwargs()))


def compare(ms_numerics, torch_numerics, mode, outer_scale=1.):
    """Forward parity report of MindSpore built with ``ms_numerics`` against torch with ``torch_numerics``."""
    set_mode(mode)
    out = mindspore_outputs(mindspore_net(ms_numerics, outer_scale), batch())
    return compare_outputs(out, torch_reference(torch_numerics, outer_scale))


@pytest.mark.parametrize('preset', list(PRESETS))
def test_numerics_reach_every_layer(preset):
    numerics = PRESETS[preset]
    pt = torch_ref.create_model(NAME, **numerics.model_kwargs())
    net = mindspore_tnt.create_model(NAME, **numerics.model_kwargs())
    assert pt.numerics == net.numerics == numerics
    approximate = {'erf': 'none', 'tanh': 'tanh'}[numerics.gelu]
    pt_norms = {n: m.eps for n, m in pt.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    ms_norms = {n: c.epsilon for n, c in net.cells_and_names() if isinstance(c, ms.nn.LayerNorm)}
    assert pt_norms == ms_norms
    assert pt_norms.pop('norm') == numerics.final_norm_eps
    assert set(pt_norms.values()) == {numerics.norm_eps} and 'norm2_proj' in pt_norms
    pt_gelus = [m.approximate for m in pt.modules() if isinstance(m, torch.nn.GELU)]
    ms_gelus = [c for _, c in net.cells_and_names() if isinstance(c, GELU)]
    assert len(pt_gelus) == len(ms_gelus) == 2 * len(pt.blocks)
    assert set(pt_gelus) == {c.approximate for c in ms_gelus} == {approximate}
    if numerics.gelu == 'tanh':
        assert all(c.kernel is None for c in ms_gelus)


@pytest.mark.parametrize('mode', MODES)
def test_tanh_gelu_matches_torch(mode):
    """MindSpore's tanh GELU is torch's ``approximate='tanh'`` to fp32 rounding, never the erf kernel."""
    set_mode(mode)
    x = np.linspace(-10, 10, 100_001, dtype=np.float32)
    gelu = GELU(approximate=True, cpu_kernel=True)
    assert gelu.kernel is None
    ms_y = gelu(ms.Tensor(x)).asnumpy()
    tanh_y = torch.nn.GELU(approximate='tanh')(torch.from_numpy(x)).numpy()
    erf_y = torch.nn.GELU(approximate='none')(torch.from_numpy(x)).numpy()
    ulp = np.spacing(np.maximum(np.abs(tanh_y), 1.))
    assert np.all(np.abs(ms_y - tanh_y) <= 2 * ulp)
    assert np.abs(ms_y - erf_y).max() > 100 * ulp.max()


@pytest.mark.parametrize('preset', ['mindcv', 'zoo'])
def test_preset_changes_the_function(preset):
    # torch alone: the preset's function differs from PyTorch numerics' beyond the bound,
    # so its parity below is not vacuous.
    report = compare_outputs(torch_reference(PRESETS[preset]), torch_reference(PYTORCH))
    assert not report['passed']
    assert (report['first_failure']['stage'], report['first_failure']['stream']) == ('block 0', 'inner')


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('preset', list(PRESETS))
def test_preset_parity_every_block(preset, mode):
    numerics = PRESETS[preset]
    report = compare(numerics, numerics, mode)
    assert report['passed'], f'{preset} [{mode}]: {describe_failure(report)}\n{format_rows(report["rows"])}'


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('ms_numerics, torch_numerics', [
    (dataclasses.replace(MINDCV, gelu='erf'), MINDCV),
    (dataclasses.replace(ZOO, norm_eps=1e-5), ZOO),
], ids=['erf-gelu-for-tanh', 'norm-eps-1e-5-for-1e-7'])
def test_catches_mismatched_numerics(ms_numerics, torch_numerics, mode):
    # Both first show in the inner tokens of block 0: its MLP is the first GELU, and its
    # norms read the pixel embedding's words, of small enough variance for eps to matter.
    report = compare(ms_numerics, torch_numerics, mode)
    assert not report['passed'], 'the mismatched numerics went unnoticed'
    failure = report['first_failure']
    assert (failure['stage'], failure['stream']) == ('block 0', 'inner'), describe_failure(report)


def test_final_norm_eps_invisible_at_unit_variance():
    # Why the final-norm test shrinks the outer stream: at the random weights' scale the
    # final norm's input variance is about one, and eps 1e-5 vs 1e-7 moves the logits, in
    # torch alone, by less than the bound.
    report = compare_outputs(torch_reference(dataclasses.replace(MINDCV, final_norm_eps=1e-5)),
                             torch_reference(MINDCV))
    assert report['passed'] and report['logits_rel'] > 0


@pytest.mark.parametrize('mode', MODES)
def test_catches_mismatched_final_norm_eps(mode):
    outer = torch_reference(MINDCV, OUTER_SCALE)[1][-1][1]
    variance = outer.var(-1)
    assert 1e-7 < np.median(variance) < 1e-4, 'the final norm input is not at the scale of its eps'
    report = compare(MINDCV, MINDCV, mode, OUTER_SCALE)
    assert report['passed'], f'[{mode}]: {describe_failure(report)}\n{format_rows(report["rows"])}'
    report = compare(dataclasses.replace(MINDCV, final_norm_eps=1e-5), MINDCV, mode, OUTER_SCALE)
    assert not report['passed'], 'the mismatched final-norm eps went unnoticed'
    # every stage before the final norm agrees: only the logits diverge
    assert report['first_failure'] is None and report['logits_rel'] > FP32_BOUND, describe_failure(report)
