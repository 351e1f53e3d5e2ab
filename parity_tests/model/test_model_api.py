"""The timm-style Python API of both frameworks: ``create_model`` with tags and checkpoint
files, ``forward_intermediates`` (across frameworks and against ``forward_stages``),
``prune_intermediate_layers`` and ``get_classifier``; on ``tnt_tiny_patch16_64``.
"""
import mindspore as ms
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import mindspore_tnt
import torch_ref
from convert.layouts import timm_shapes
from convert.transfer import mindspore_to_numpy, numpy_to_mindspore, numpy_to_torch, torch_to_numpy
from tnt_common.compare import FP32_BOUND
from tnt_common.fixtures import make_batch
from parity.forward import set_mode
from mindspore_tnt.outputs import mindspore_outputs
from tnt_common.fixtures import random_timm_weights
from parity_tests.helpers import forward_reference, to_mindcv
from tnt_common.compare import rel_err
from tnt_common.numerics import PRESETS, PYTORCH, Numerics
from tnt_common.variants import PRETRAINED_CFGS, pretrained_cfg

NAME = 'tnt_tiny_patch16_64'
TAGGED = NAME + '.untrained'
FRAMEWORKS = {'torch': torch_ref, 'mindspore': mindspore_tnt}


def arrays(model):
    return torch_to_numpy(model) if isinstance(model, torch.nn.Module) else mindspore_to_numpy(model)


def numpy(tensor):
    return tensor.asnumpy() if isinstance(tensor, ms.Tensor) else tensor.numpy()


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """(timm weights, a timm .safetensors file and a MindCV .ckpt holding them)."""
    weights = random_timm_weights(timm_shapes(NAME), seed=5)
    folder = tmp_path_factory.mktemp('checkpoints')
    safetensors = str(folder / 'model.safetensors')
    save_file(weights, safetensors, metadata={'format': 'pt'})
    mindcv = str(folder / 'tnt_tiny_mindcv.ckpt')
    ms.save_checkpoint([{'name': k, 'data': ms.Tensor(v)} for k, v in to_mindcv(weights).items()], mindcv)
    return weights, safetensors, mindcv


def test_tags_and_listings():
    for package in FRAMEWORKS.values():
        assert package.list_models() == sorted(cfg.partition('.')[0] for cfg in PRETRAINED_CFGS)
        assert package.list_pretrained() == ['tnt_b_patch16_224.in1k', 'tnt_s_legacy_patch16_224.in1k',
                                             'tnt_s_patch16_224.in1k']
    for name in torch_ref.list_pretrained():
        cfg = pretrained_cfg(name)
        assert cfg['hf_hub_id'] == 'timm/' + name and f"{cfg['architecture']}.{cfg['tag']}" == name
        assert pretrained_cfg(cfg['architecture']) == cfg   # a bare name is its default tag
    assert pretrained_cfg(NAME)['tag'] == 'untrained'
    # timm's list_models(filter): a name or wildcard pattern over both families
    assert mindspore_tnt.list_models('*tiny*') == ['ptnt_tiny_patch16_64', NAME]
    assert torch_ref.list_models('tnt_s*') == ['tnt_s_legacy_patch16_224', 'tnt_s_patch16_224']
    assert torch_ref.list_models(NAME) == [NAME] and torch_ref.list_models('resnet*') == []


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_bad_build_arguments(framework):
    create = FRAMEWORKS[framework].create_model
    with pytest.raises(ValueError, match='img_size 72 is not a positive multiple of the patch size 16'):
        create(NAME, img_size=72)
    with pytest.raises(ValueError, match="global_pool 'max': 'token' .* 'avg' .* or '' "):
        create(NAME, global_pool='max')
    with pytest.raises(ValueError, match="global_pool 'max'"):
        create(NAME).reset_classifier(10, 'max')


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_create_model_with_tags(framework):
    create = FRAMEWORKS[framework].create_model
    model = create(TAGGED, num_classes=0)
    assert model.pretrained_cfg == pretrained_cfg(NAME) and model.num_classes == 0
    with pytest.raises(ValueError, match=f"unknown tag 'in1k' of {NAME}; known: {TAGGED}"):
        create(NAME + '.in1k')
    with pytest.raises(ValueError, match='unknown TNT variant'):
        create('tnt_xl_patch16_224.in1k')


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_pretrained_needs_a_checkpoint_path(framework):
    create = FRAMEWORKS[framework].create_model
    hub = r'pass checkpoint_path=.*huggingface-cli download timm/tnt_s_patch16_224\.in1k'
    with pytest.raises(ValueError, match=hub):
        create('tnt_s_patch16_224.in1k', pretrained=True)
    with pytest.raises(ValueError, match=rf'pass checkpoint_path=.*{TAGGED} has no published weights'):
        create(TAGGED, pretrained=True)


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_checkpoint_path_timm_safetensors(files, framework):
    weights, safetensors, _ = files
    create = FRAMEWORKS[framework].create_model
    for model in (create(TAGGED, checkpoint_path=safetensors),
                  create(NAME, pretrained=True, checkpoint_path=safetensors)):
        got = arrays(model)
        assert got.keys() == weights.keys() and all(np.array_equal(got[k], weights[k]) for k in weights)
        assert model.numerics == PYTORCH and model.pretrained_cfg['tag'] == 'untrained'


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_checkpoint_path_with_build_kwargs(files, framework):
    weights, safetensors, _ = files
    extra = dict(impl='standard') if framework == 'mindspore' else {}
    model = FRAMEWORKS[framework].create_model(TAGGED, checkpoint_path=safetensors, num_classes=10, gelu='tanh',
                                               drop_path_rate=0.1, **extra)
    got = arrays(model)
    assert got['head.weight'].shape == (10, 96)
    assert all(np.array_equal(got[k], v) for k, v in weights.items() if not k.startswith('head.'))
    assert model.numerics == Numerics('tanh', 1e-5, 1e-5)
    assert model.blocks[-1].drop_path.drop_prob == pytest.approx(0.1)
    if extra:
        assert model.pixel_embed.impl == 'standard'
    resized = FRAMEWORKS[framework].create_model(TAGGED, checkpoint_path=safetensors, img_size=96)
    assert arrays(resized)['patch_pos'].shape == (1, 37, 96)


def test_checkpoint_path_mindcv_keeps_its_numerics(files):
    weights, _, mindcv = files
    set_mode('pynative')
    pt = torch_ref.create_model(TAGGED, checkpoint_path=mindcv)
    net = mindspore_tnt.create_model(TAGGED, checkpoint_path=mindcv)
    x = make_batch(2, 64, seed=1)
    for model in (pt, net):
        assert model.numerics == PRESETS['mindcv']
        got = arrays(model)
        assert all(np.array_equal(got[k], weights[k]) for k in weights)
    pt.eval()
    net.set_train(False)
    with torch.no_grad():
        logits = pt(torch.from_numpy(x)).numpy()
    assert rel_err(net(ms.Tensor(x)).asnumpy(), logits) <= FP32_BOUND
    # a numerics keyword replaces that one value only
    override = mindspore_tnt.create_model(TAGGED, checkpoint_path=mindcv, norm_eps=1e-6)
    assert override.numerics == Numerics('tanh', 1e-6, 1e-7)


# (forward_intermediates keywords, the blocks they select)
CASES = [
    (dict(), [0, 1, 2, 3]),
    (dict(indices=2, norm=True), [2, 3]),
    (dict(indices=[0, -1], output_fmt='NLC', intermediates_only=True), [0, 3]),
    (dict(indices=[-2, 1], stop_early=True, return_prefix_tokens=True), [1, 2]),
]


@pytest.fixture(scope='module')
def models():
    """(torch model, MindSpore net, batch, ``forward_stages`` of {'torch', 'pynative', 'graph'}):
    ``helpers.forward_reference``'s models and batch.

    The stages, ((inner, outer) as numpy, ...), are computed on first use, in eval mode.
    """
    torch_model, net, x, (_, torch_stages) = forward_reference(NAME)
    stages = {'torch': torch_stages}

    def stages_of(run):
        if run not in stages:
            set_mode(run)
            stages[run] = mindspore_outputs(net, x)[1]
        return stages[run]
    torch_model.eval()
    net.set_train(False)
    return torch_model, net, x, stages_of


def from_stages(torch_model, stages, kwargs, blocks):
    """What ``forward_intermediates(**kwargs)`` must return, built from ``forward_stages``'s
    outer tokens (normed by the torch model's final norm)."""
    def norm(t):
        with torch.no_grad():
            return torch_model.norm(torch.from_numpy(t)).numpy()
    outer = [norm(stages[i + 1][1]) if kwargs.get('norm') else stages[i + 1][1] for i in blocks]
    features = norm(stages[blocks[-1] + 1 if kwargs.get('stop_early') else -1][1])
    tokens = [t[:, 1:] for t in outer]
    if kwargs.get('output_fmt', 'NCHW') == 'NCHW':
        tokens = [t.reshape(2, 4, 4, -1).transpose(0, 3, 1, 2) for t in tokens]
    if kwargs.get('return_prefix_tokens'):
        tokens = [(t, o[:, :1]) for t, o in zip(tokens, outer)]
    return tokens if kwargs.get('intermediates_only') else (features, tokens)


def flatten(out, kwargs):
    """The arrays of a ``forward_intermediates`` result, final features first if present."""
    final, inter = ([], out) if kwargs.get('intermediates_only') else ([out[0]], out[1])
    pairs = [t for pair in inter for t in pair] if kwargs.get('return_prefix_tokens') else list(inter)
    return [t if isinstance(t, np.ndarray) else numpy(t) for t in final + pairs]


def errors(out, expected, kwargs):
    got, want = flatten(out, kwargs), flatten(expected, kwargs)
    assert [a.shape for a in got] == [b.shape for b in want]
    return [rel_err(a, b) for a, b in zip(got, want)]


@pytest.mark.parametrize('case', range(len(CASES)))
def test_torch_intermediates_are_the_stages_outer_tokens(models, case):
    torch_model, _, x, stages_of = models
    kwargs, blocks = CASES[case]
    with torch.no_grad():
        out = torch_model.forward_intermediates(torch.from_numpy(x), **kwargs)
    expected = from_stages(torch_model, stages_of('torch'), kwargs, blocks)
    assert errors(out, expected, kwargs) == [0.] * len(flatten(out, kwargs))


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
@pytest.mark.parametrize('case', range(len(CASES)))
def test_mindspore_intermediates_match_torch_and_stages(models, case, mode):
    torch_model, net, x, stages_of = models
    kwargs, blocks = CASES[case]
    expected = from_stages(torch_model, stages_of(mode), kwargs, blocks)
    with torch.no_grad():
        torch_out = torch_model.forward_intermediates(torch.from_numpy(x), **kwargs)
    set_mode(mode)
    runs = [mindspore_tnt.ForwardIntermediates(net, **kwargs)(ms.Tensor(x))]
    if mode == 'pynative':
        runs.append(net.forward_intermediates(ms.Tensor(x), **kwargs))
    for out in runs:
        assert max(errors(out, torch_out, kwargs)) <= FP32_BOUND
        assert max(errors(out, expected, kwargs)) <= FP32_BOUND


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
def test_planted_wrong_block_is_caught(models, monkeypatch, mode):
    # forward_intermediates taking each selected block's predecessor: both comparisons fail.
    import mindspore_tnt.tnt as ms_tnt
    from tnt_common.variants import feature_take_indices

    def off_by_one(num_blocks, indices=None):
        take, _ = feature_take_indices(num_blocks, indices)
        return [i - 1 for i in take], max(take) - 1
    monkeypatch.setattr(ms_tnt, 'feature_take_indices', off_by_one)
    torch_model, net, x, stages_of = models
    kwargs = dict(indices=[1, 3], intermediates_only=True)
    expected = from_stages(torch_model, stages_of(mode), kwargs, [1, 3])
    set_mode(mode)
    out = mindspore_tnt.ForwardIntermediates(net, **kwargs)(ms.Tensor(x))
    with torch.no_grad():
        torch_out = torch_model.forward_intermediates(torch.from_numpy(x), **kwargs)
    assert min(errors(out, torch_out, kwargs)) > 100 * FP32_BOUND
    assert min(errors(out, expected, kwargs)) > 100 * FP32_BOUND


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_bad_indices_and_format(framework):
    model = FRAMEWORKS[framework].create_model(NAME)
    x = make_batch(1, 64)
    x = torch.from_numpy(x) if framework == 'torch' else ms.Tensor(x)
    for kwargs, message in ((dict(indices=5), r'last-n \(5\) is out of range \(1 to 4\)'),
                            (dict(indices=[4]), r'block index 4 is out of range \(-4 to 3\)'),
                            (dict(indices=(0, -5)), r'block index -5 is out of range \(-4 to 3\)'),
                            (dict(indices=[]), r'indices \[\]: None, an int \(the last n blocks\) or a non-empty list'),
                            (dict(indices='3'), r"indices '3': None, an int"),
                            (dict(indices=[1.0]), r'block index 1.0 is not an int'),
                            (dict(output_fmt='NHWC'), "output_fmt must be 'NCHW' or 'NLC'")):
        with pytest.raises(ValueError, match=message):
            model.forward_intermediates(x, **kwargs)


def test_graph_mode_rejects_bad_indices():
    set_mode('graph')
    with pytest.raises(ValueError, match=r'block index 4 is out of range'):
        mindspore_tnt.ForwardIntermediates(mindspore_tnt.create_model(NAME), indices=[4])(ms.Tensor(make_batch(1, 64)))


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_get_classifier(framework):
    model = FRAMEWORKS[framework].create_model(NAME)
    assert model.get_classifier() is model.head and tuple(model.head.weight.shape) == (1000, 96)
    model.reset_classifier(10)
    assert model.get_classifier() is model.head and tuple(model.head.weight.shape) == (10, 96)


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_prune_intermediate_layers(models, framework):
    set_mode('pynative')
    weights = torch_to_numpy(models[0])
    x = make_batch(2, 64, seed=0)
    if framework == 'torch':
        full, pruned = (numpy_to_torch(weights, torch_ref.create_model(NAME)).eval() for _ in range(2))
        x = torch.from_numpy(x)
    else:
        full, pruned = (numpy_to_mindspore(weights, mindspore_tnt.create_model(NAME)).set_train(False)
                        for _ in range(2))
        x = ms.Tensor(x)
    assert pruned.prune_intermediate_layers([-3], prune_norm=True) == [1]
    assert len(pruned.blocks) == 2 and pruned.global_pool == '' and pruned.num_classes == 0
    assert set(arrays(pruned)) == {k for k in weights if not k.startswith(('blocks.2.', 'blocks.3.', 'head.', 'norm.'))}
    with torch.no_grad():
        want = full.forward_intermediates(x, indices=[1], intermediates_only=True)
        got = pruned.forward_intermediates(x, indices=[1], intermediates_only=True)
        tokens = pruned(x)
    assert np.array_equal(numpy(got[0]), numpy(want[0]))
    assert tuple(tokens.shape) == (2, 17, 96)   # no norm, no pooling, no head: the outer tokens


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_weight_init_skip_leaves_out_timms_init(framework):
    to_numpy = torch_to_numpy if framework == 'torch' else mindspore_to_numpy
    timm_init, skipped = (to_numpy(FRAMEWORKS[framework].create_model(NAME, weight_init=w)) for w in ('', 'skip'))
    assert timm_init['cls_token'].any() and not skipped['cls_token'].any()   # trunc-normal 0.02 / zeros
    assert timm_init['head.weight'].std() < 0.025 < skipped['head.weight'].std()   # 0.02 / the framework's default
    with pytest.raises(ValueError, match="weight_init 'jax'"):
        FRAMEWORKS[framework].create_model(NAME, weight_init='jax')
