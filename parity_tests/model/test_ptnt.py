"""PyramidTNT: the variant table, parameter counts and keys, and fp32 forward parity block by block.

Random weights with non-trivial BatchNorm statistics (``random_pyramid_weights``) go into
torch_ref, are copied into mindspore_tnt through ``convert.keymap.PYRAMID_TO_MINDSPORE``,
and both run the same batch of 2 images: the stem, every block and every merge are compared
(``tnt_common.compare``, bound ``FP32_BOUND``). Planted faults show that the same comparison
catches a wrong word-merge tiling, the relative position added after the softmax, and a
BatchNorm momentum left at torch's value (visible in train mode only, in the running statistics);
they run in PYNATIVE mode only, the comparisons they spoil being those both modes pass.
"""
import functools
import math

import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import ops

import mindspore_tnt
import torch_ref
from convert.errors import ConversionError
from convert.keymap import PYRAMID_TO_MINDSPORE
from convert.transfer import mindspore_to_numpy, torch_to_numpy
from mindspore_tnt import ptnt as ms_ptnt
from mindspore_tnt.outputs import mindspore_outputs
from mindspore_tnt.tnt import WithStages
from parity.forward import random_pyramid_models, set_mode
from tnt_common.compare import FP32_BOUND, compare_outputs, compare_tensors, describe_failure, format_rows
from tnt_common.fixtures import make_batch
from tnt_common.pyramid import has_inner
from tnt_common.variants import PYRAMID_VARIANTS, list_models, list_pretrained, model_args, pretrained_cfg
from torch_ref.outputs import torch_outputs
from torch_ref.ptnt import create_model as create_torch
from parity_tests.helpers import BATCH, PTNT_NAMES as NAMES, PTNT_TINY as TINY, stem_batchnorms, with_momentum

# The official parameter counts (PyramidTNT paper, Table 2; docs/ptnt.md), in thousands.
OFFICIAL_K = {'ptnt_ti_patch16_192': 10_579, 'ptnt_s_patch16_256': 31_953, 'ptnt_m_patch16_256': 84_944,
              'ptnt_b_patch16_256': 156_990}


@functools.lru_cache(maxsize=None)
def meta_model(name):
    """The torch model of ``name`` built on the meta device: shapes and names, no memory."""
    with torch.device('meta'):
        return create_torch(name)


def param_count(model):
    return sum(p.numel() for p in model.parameters())


# --- the variant table ---

def test_table_keeps_tnt_and_lists_ptnt_apart():
    assert list_models() == sorted(['tnt_s_patch16_224', 'tnt_b_patch16_224', 'tnt_s_legacy_patch16_224',
                                    'tnt_tiny_patch16_64'])
    assert list_models('ptnt') == sorted(OFFICIAL_K) + [TINY] == sorted(PYRAMID_VARIANTS)
    assert list_models(None) == sorted(list_models() + list_models('ptnt'))
    assert not [n for n in list_pretrained() if n.startswith('ptnt')]   # no hub weights
    assert model_args('ptnt_s_patch16_256') == dict(outer_dim=128, inner_dim=8, depths=(2, 8, 4, 2), outer_heads=4,
                                                    inner_heads=2, img_size=256)
    with pytest.raises(ValueError, match='unknown TNT variant'):
        model_args('ptnt_l_patch16_256')


@pytest.mark.parametrize('name', sorted(PYRAMID_VARIANTS))
def test_pretrained_cfg(name):
    cfg = pretrained_cfg(name)
    size = PYRAMID_VARIANTS[name]['img_size']
    assert {k: cfg[k] for k in ('mean', 'std', 'crop_pct', 'interpolation', 'input_size', 'hf_hub_id')} == dict(
        mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=0.9, interpolation='bicubic', input_size=(3, size, size),
        hf_hub_id='')
    assert cfg['first_conv'] == 'patch_embed.common_conv.0' and cfg['classifier'] == 'head'
    assert cfg['tag'] == ('untrained' if name == TINY else 'in1k')


# --- parameter counts and keys ---

@pytest.mark.parametrize('name', sorted(PYRAMID_VARIANTS))
def test_torch_parameter_count(name):
    count = param_count(meta_model(name))
    assert count == PYRAMID_VARIANTS[name]['num_params']
    if name in OFFICIAL_K:
        assert round(count / 1000) == OFFICIAL_K[name]


def test_torch_keys_of_s():
    state = meta_model('ptnt_s_patch16_256').state_dict()
    assert len(state) == 386
    for key in ('outer_pos', 'inner_pos', 'patch_embed.common_conv.0.weight', 'patch_embed.common_conv.1.running_mean',
                'patch_embed.inner_convs.1.num_batches_tracked', 'patch_embed.outer_convs.7.running_var',
                'word_merges.0.norm.weight', 'word_merges.0.conv.0.weight', 'sentence_merges.2.conv.0.bias',
                'stages.0.blocks.0.outer_attn.linear.weight', 'stages.0.blocks.0.outer_attn.norm.bias',
                'stages.3.blocks.1.outer_mlp.fc2.bias', 'norm.weight', 'head.weight'):
        assert key in state, key
    assert not any(k.startswith('stages.2.') and '.outer_attn.linear' in k for k in state)  # sr 1 from stage 2
    assert not any('pool' in k for k in state)
    # one relative_pos per stage (heads, N, N / sr^2): grids 32, 16, 8, 4; sr 4, 2, 1, 1
    assert [tuple(state[f'stages.{s}.relative_pos'].shape) for s in range(4)] == [
        (1, 4, 1024, 64), (1, 8, 256, 64), (1, 16, 64, 64), (1, 16, 16, 16)]
    # the inner transformer: block 0 of every stage, and block 1 of stage 1 (8 blocks)
    inner = sorted({tuple(map(int, k.split('.')[1:4:2])) for k in state if '.inner_attn.' in k})
    assert inner == [(0, 0), (1, 0), (1, 1), (2, 0), (3, 0)]
    assert [has_inner(j, 8) for j in range(8)] == [True, True] + [False] * 6


@pytest.mark.parametrize('name', [TINY, 'ptnt_s_patch16_256'])
def test_mindspore_parameters_mirror_torch(name):
    net = ms_ptnt.create_model(name)
    torch_state = meta_model(name).state_dict()
    expected = {PYRAMID_TO_MINDSPORE.forward(k): tuple(v.shape) for k, v in torch_state.items()
                if not PYRAMID_TO_MINDSPORE.drops(k)}
    got = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert got == expected
    learned = sum(math.prod(p.shape) for p in net.trainable_params())
    assert learned == PYRAMID_VARIANTS[name]['num_params']
    assert sorted(n for n, p in got.items() if n.endswith(('moving_mean', 'moving_variance'))) == sorted(
        PYRAMID_TO_MINDSPORE.forward(k) for k in torch_state if k.endswith(('running_mean', 'running_var')))


def test_class_defaults_build_ptnt_s():
    """``PyramidTNT()`` with no argument, in either framework, is PyramidTNT-S at its 256 px
    (the official class's 224 px cannot merge its 7x7 grid), and so is its ``Stem()``."""
    with torch.device('meta'):
        torch_default, torch_stem = torch_ref.ptnt.PyramidTNT(), torch_ref.ptnt.Stem()
    want = {k: tuple(v.shape) for k, v in meta_model('ptnt_s_patch16_256').state_dict().items()}
    assert {k: tuple(v.shape) for k, v in torch_default.state_dict().items()} == want
    assert {f'patch_embed.{k}': tuple(v.shape) for k, v in torch_stem.state_dict().items()} == \
        {k: v for k, v in want.items() if k.startswith('patch_embed.')}
    mindspore_want = {PYRAMID_TO_MINDSPORE.forward(k): v for k, v in want.items() if not PYRAMID_TO_MINDSPORE.drops(k)}
    assert {p.name: tuple(p.shape) for p in ms_ptnt.PyramidTNT(weight_init='skip').get_parameters()} == mindspore_want
    stem = ms_ptnt.Stem()
    stem.update_parameters_name('patch_embed.')
    assert {p.name: tuple(p.shape) for p in stem.get_parameters()} == \
        {k: v for k, v in mindspore_want.items() if k.startswith('patch_embed.')}


def test_key_map_both_ways():
    keys = list(meta_model(TINY).state_dict())
    dropped = [k for k in keys if PYRAMID_TO_MINDSPORE.drops(k)]
    assert dropped and all(k.endswith('.num_batches_tracked') for k in dropped)
    for k in keys:
        if k not in dropped:
            assert PYRAMID_TO_MINDSPORE.backward(PYRAMID_TO_MINDSPORE.forward(k)) == k
    assert PYRAMID_TO_MINDSPORE.forward('patch_embed.outer_convs.4.running_var') == \
        'patch_embed.outer_convs.4.moving_variance'
    assert PYRAMID_TO_MINDSPORE.forward('patch_embed.outer_convs.3.weight') == 'patch_embed.outer_convs.3.weight'
    assert PYRAMID_TO_MINDSPORE.forward('stages.1.blocks.0.outer_attn.norm.weight') == \
        'stages.1.blocks.0.outer_attn.norm.gamma'


@pytest.mark.parametrize('framework', ['torch', 'mindspore'])
def test_create_model_builds_ptnt_names(framework):
    package = {'torch': torch_ref, 'mindspore': mindspore_tnt}[framework]
    model = package.create_model(TINY + '.untrained', num_classes=10)
    assert type(model).__name__ == 'PyramidTNT' and model.num_classes == 10
    assert model.pretrained_cfg == pretrained_cfg(TINY)
    with pytest.raises(ConversionError, match='no such file'):  # checkpoints: parity_tests/convert/test_ptnt_convert.py
        package.create_model(TINY, checkpoint_path='weights.pth')


# --- the torch reference against the official formulations ---

def test_stem_words_are_unfolded_4x4_blocks():
    # inner tokens: the 4x4 pixel blocks of the inner branch, as nn.Unfold(4, stride 4) cuts them
    model = create_torch(TINY).eval()
    x = torch.from_numpy(make_batch(BATCH, 64, seed=3))
    with torch.no_grad():
        inner, _ = model.patch_embed(x)
        pixels = model.patch_embed.inner_convs(model.patch_embed.common_conv(x))
    c = pixels.shape[1]
    blocks = torch.nn.functional.unfold(pixels, 4, stride=4)               # (B, c*16, N)
    words = blocks.transpose(1, 2).reshape(-1, c, 16).transpose(1, 2)      # (B*N, 16, c)
    assert torch.equal(inner, words)


def test_word_tiling_is_the_2x2_neighbourhood():
    # merged sentence (i, j) holds sentence (2i+r, 2j+c) at rows 4r.., columns 4c..: the
    # official even/odd slices of the grid, concatenated down then across
    merge = create_torch(TINY).word_merges[0]
    H = W = 4
    x = torch.arange(BATCH * H * W * 16 * 3, dtype=torch.float32).reshape(BATCH * H * W, 16, 3)
    grid = x.reshape(BATCH, H, W, 4, 4, 3)
    down = [torch.cat([grid[:, r::2, c::2] for r in (0, 1)], dim=3) for c in (0, 1)]
    expected = torch.cat(down, dim=4).reshape(-1, 8, 8, 3).permute(0, 3, 1, 2)
    assert torch.equal(merge.tile(x, H, W), expected)


def test_drop_path_rates_run_over_all_blocks():
    model = create_torch('ptnt_s_patch16_256', drop_path_rate=0.1)
    rates = [blk.drop_path.drop_prob for stage in model.stages for blk in stage.blocks]
    assert np.allclose(rates, torch.linspace(0, 0.1, 16).tolist())


# --- forward parity, block by block ---

@functools.lru_cache(maxsize=None)
def reference():
    """(torch model, its weights, batch, torch eval outputs); the torch model stays in eval mode."""
    torch_model, _ = random_pyramid_models(TINY, seed=0)
    x = make_batch(BATCH, PYRAMID_VARIANTS[TINY]['img_size'], seed=0)
    return torch_model, torch_to_numpy(torch_model), x, torch_outputs(torch_model, x)


def fresh_net():
    """A new MindSpore PyramidTNT holding the reference weights."""
    from convert.transfer import numpy_to_mindspore
    return numpy_to_mindspore(reference()[1], ms_ptnt.create_model(TINY, weight_init='skip'), PYRAMID_TO_MINDSPORE)




def compare(net):
    """``compare_outputs`` of ``net`` (eval mode) against the torch reference, stages named."""
    _, _, x, ref = reference()
    out = mindspore_outputs(net, x)
    return out, compare_outputs(out, ref, names=NAMES)


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
def test_forward_parity_every_block(mode):
    set_mode(mode)
    out, report = compare(fresh_net())
    ref = reference()[3]
    assert len(out[1]) == len(ref[1]) == len(NAMES) == 1 + sum(PYRAMID_VARIANTS[TINY]['depths']) + 3
    for (pm, qm), (pt, qt) in zip(out[1], ref[1]):
        assert pm.shape == pt.shape and qm.shape == qt.shape
    assert report['passed'], f'[{mode}]: {describe_failure(report)}\n{format_rows(report["rows"])}'
    assert out[0].shape == (BATCH, 1000)
    # the stages really are at 1/8 .. 1/64 with 16 words each
    assert [ref[1][i][1].shape[1] for i in (0, 3, 11, 13)] == [64, 16, 4, 1]   # stem, merges 1-3
    assert ref[1][3][0].shape == (BATCH * 16, 16, 8)


def test_stage_outputs_are_distinct():
    # a stage list that repeated one tensor would compare equal trivially
    ref = reference()[3][1]
    assert not np.allclose(ref[1][1], ref[2][1]) and not np.allclose(ref[0][0], ref[1][0])


# --- planted faults ---

class SwappedTiling(ms_ptnt.WordAggregation):
    """The 2x2 neighbours placed transposed: (2i+1, 2j) right of (2i, 2j) instead of below."""

    def tile(self, x, H, W):
        C = x.shape[-1]
        x = ops.transpose(x.reshape(-1, H // 2, 2, W // 2, 2, 4, 4, C), (0, 1, 3, 4, 5, 2, 6, 7))
        return ops.transpose(x.reshape(-1, 8, 8, C), (0, 3, 1, 2))


class PosAfterSoftmax(ms_ptnt.Attention):
    """``relative_pos`` added to the attention weights instead of the scores."""

    def construct(self, x, H, W, relative_pos=None):
        B, L, D = x.shape
        q = ops.transpose(self.q(x).reshape(B, L, self.num_heads, self.head_dim), (0, 2, 1, 3))
        if self.sr_ratio > 1:
            x = ops.swapaxes(self.pool(ops.swapaxes(x, 1, 2).reshape(B, D, H, W)).reshape(B, D, -1), 1, 2)
            x = self.norm(self.linear(x))
        k, v = ops.unstack(ops.transpose(self.kv(x).reshape(B, -1, 2, self.num_heads, self.head_dim),
                                         (2, 0, 3, 1, 4)), 0)
        attn = ops.softmax(self.matmul_qk(q, k) * self.scale, axis=-1)
        if relative_pos is not None:
            attn = attn + relative_pos
        x = ops.transpose(self.matmul_av(attn, v), (0, 2, 1, 3)).reshape(B, L, D)
        return self.proj(x)


def run_fault(plant):
    """The first failure of the eval-mode comparison with ``plant(net)`` applied, in PYNATIVE mode:
    the comparison is the one both modes pass above, and a plant in GRAPH mode compiles a graph
    of its own."""
    set_mode('pynative')
    net = fresh_net()
    plant(net)
    _, report = compare(net)
    assert not report['passed'], 'the planted fault went unnoticed'
    f = report['first_failure']
    return (f['stage'], f['stream']), describe_failure(report)


@pytest.mark.parametrize('merge', [1, 2])
def test_catches_swapped_word_tiling(merge):
    def plant(net):
        net.word_merges[merge - 1].__class__ = SwappedTiling
    where, message = run_fault(plant)
    # the words are merged wrongly; the outer tokens of that merge still agree
    assert where == (f'merge {merge}', 'inner'), message


def test_catches_relative_pos_after_softmax():
    def plant(net):
        net.stages[1].blocks[2].outer_attn.__class__ = PosAfterSoftmax
    where, message = run_fault(plant)
    # block 2 of stage 1 has no inner transformer: its outer tokens diverge first
    assert where == ('stage 1 block 2', 'outer'), message


# --- BatchNorm in train mode: running statistics ---

@functools.lru_cache(maxsize=None)
def torch_train_forward():
    """(logits, running statistics) of one train-mode forward of a copy of the reference."""
    torch_model = create_torch(TINY)
    torch_model.load_state_dict(reference()[0].state_dict())
    torch_model.train()
    with torch.no_grad():
        logits = torch_model(torch.from_numpy(reference()[2]))
    stats = {k: v for k, v in torch_to_numpy(torch_model).items() if k.endswith(('running_mean', 'running_var'))}
    return logits.numpy(), stats


def train_stats_report(mode, plant=lambda net: None):
    """(rows of ``compare_tensors`` over the running statistics, logits rel err) after one
    train-mode forward of torch and of a fresh MindSpore copy (``plant`` spoils it first)."""
    set_mode(mode)
    net = fresh_net()
    plant(net)
    net.set_train(True)
    logits, _ = WithStages(net)(ms.Tensor(reference()[2]))
    net.set_train(False)
    ref_logits, ref_stats = torch_train_forward()
    stats = {k: v for k, v in mindspore_to_numpy(net, PYRAMID_TO_MINDSPORE).items() if k in ref_stats}
    before = {k: v for k, v in reference()[1].items() if k in ref_stats}
    moved = min(r['rel'] for r in compare_tensors(before, ref_stats))
    assert moved > 10 * FP32_BOUND, 'the train-mode forward left the statistics (almost) unchanged'
    return compare_tensors(stats, ref_stats), compare_tensors({'logits': logits.asnumpy()}, {'logits': ref_logits})


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
def test_train_mode_batchnorm_statistics(mode):
    rows, logits = train_stats_report(mode)
    assert len(rows) == 2 * 5
    worst = max(rows, key=lambda r: r['rel'])
    assert worst['rel'] <= FP32_BOUND, worst
    assert logits[0]['rel'] <= FP32_BOUND, logits   # batch statistics normalise alike


def test_catches_torch_momentum_in_mindspore():
    def plant(net):
        for seq, i in stem_batchnorms(net):
            seq[i] = with_momentum(seq[i], 0.1)
    rows, logits = train_stats_report('pynative', plant)   # PYNATIVE, as run_fault
    failed = [r['name'] for r in rows if not r['rel'] <= FP32_BOUND]
    assert len(failed) == len(rows), failed    # every running statistic moved by the wrong amount
    assert logits[0]['rel'] <= FP32_BOUND       # the forward itself cannot show it ...
    set_mode('pynative')
    net = fresh_net()
    plant(net)
    assert compare(net)[1]['passed']            # ... nor can an eval-mode comparison


# --- drop path in train mode (PYNATIVE: the shared noise is a Python hook) ---

def test_train_mode_parity_with_shared_drop_path_masks():
    from parity.droppath import mindspore_noise, set_noise, torch_noise
    set_mode('pynative')
    torch_model, net = random_pyramid_models(TINY, seed=0, drop_path_rate=0.3)
    x = reference()[2]
    pt_noise, ms_noise = torch_noise(7), mindspore_noise(7)
    assert set_noise(torch_model, pt_noise) == set_noise(net, ms_noise) == sum(PYRAMID_VARIANTS[TINY]['depths'])
    torch_model.train()
    with torch.no_grad():
        features, stages = torch_model.forward_stages(torch.from_numpy(x))
        ref = (torch_model.forward_head(features).numpy(), tuple((p.numpy(), q.numpy()) for p, q in stages))
    net.set_train(True)
    logits, stages = WithStages(net)(ms.Tensor(x))
    out = (logits.asnumpy(), tuple((p.asnumpy(), q.asnumpy()) for p, q in stages))
    report = compare_outputs(out, ref, names=NAMES)
    assert report['passed'], f'{describe_failure(report)}\n{format_rows(report["rows"])}'
    shapes = pt_noise.source.shapes
    assert shapes == ms_noise.source.shapes
    # block 0 draws per sentence in the inner branch (B*N samples), per image in the outer one;
    # the first block's rate is 0, so the first draws come from stage 0 block 1 (outer only)
    assert shapes[:2] == [(BATCH, 1, 1)] * 2
    assert (BATCH * 16, 1, 1) in shapes        # stage 1 block 0's inner branch: 2 images x 16 sentences
    # two draws per block with a rate above 0 (10: all but the first), two more where it has the
    # inner transformer (stage 1 blocks 0 and 1, stage 2 and 3 block 0)
    assert len(shapes) == 2 * 10 + 2 * 4
