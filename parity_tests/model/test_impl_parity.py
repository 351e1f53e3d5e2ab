"""Both formulations of the MindSpore TNT match torch: ``impl='cpu'`` and ``impl='standard'``.

'cpu' (the CPU default) computes the pixel embedding's convolution as a gather of the
kernel taps and one matmul, and GELU with the vectorised kernel of ``mindspore_tnt.gelu``;
'standard' (the Ascend/GPU default) runs Conv2d and MindSpore's GELU. Both run here on
CPU, through the same forward parity as test_forward_parity (per-patch padding:
``tnt_tiny_patch16_64``; padding at the image border only: ``tnt_s_legacy_patch16_224``)
and the gradient parity of test_gradients. A wrong tap index and a wrong GELU gradient
must be caught. Where the kernel does not build, the 'cpu' cases are skipped with the
build's error, or fail under ``TNT_REQUIRE_KERNELS=1`` (``.ci/run`` sets it). The tiny
variant's 'cpu' outputs and gradients are the session's shared run of the CPU default
(``helpers.mindspore_run``, which test_graph_vs_pynative and test_gradients read too).
"""
import functools
import warnings

import mindspore as ms
import numpy as np
import pytest
from mindspore import ops

import mindspore_tnt
from convert.transfer import numpy_to_mindspore
from mindspore_tnt import gelu
from mindspore_tnt.conv_taps import conv_tap_index
from mindspore_tnt.tnt import IMPLS
from tnt_common.compare import compare_outputs, describe_failure
from parity.forward import set_mode
from mindspore_tnt.outputs import mindspore_outputs
from parity.gradients import compare_gradients, describe_gradients, mindspore_gradients
from parity_tests.helpers import mindspore_run, reference, require_cpu_kernels, without_compiler
from tnt_common.compare import format_rows
from tnt_common.variants import VARIANTS

TINY = 'tnt_tiny_patch16_64'


def net_for(name, impl):
    """A MindSpore TNT of ``impl`` with the reference weights; 'cpu' must really run the kernel."""
    if impl == 'cpu':
        require_cpu_kernels()
    net = numpy_to_mindspore(reference(name)[0], mindspore_tnt.create_model(name, impl=impl, weight_init='skip'))
    assert (net.blocks[0].mlp.act.kernel is not None) == (impl == 'cpu')
    assert (net.blocks[0].norm_in.kernel is not None) == (impl == 'cpu')
    assert (net.norm.kernel is not None) == (impl == 'cpu')
    return net


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('name', [TINY, 'tnt_s_legacy_patch16_224'])
def test_forward_parity_per_impl(name, impl, mode):
    set_mode(mode)
    _, x, _, ref, _ = reference(name)
    out = shared_run(mode)[0] if (name, impl) == (TINY, 'cpu') else mindspore_outputs(net_for(name, impl), x)
    report = compare_outputs(out, ref)
    assert report['passed'], f'{name} [{impl}, {mode}]: {describe_failure(report)}\n{format_rows(report["rows"])}'


def shared_run(mode):
    """``helpers.mindspore_run`` of the tiny variant: its net is of the CPU default, 'cpu'."""
    require_cpu_kernels()
    return mindspore_run(TINY, mode)


@functools.lru_cache(maxsize=None)
def gradients(impl, mode, plant=None):
    set_mode(mode)
    _, x, y, _, ref = reference(TINY)
    if impl == 'cpu' and plant is None:
        return compare_gradients(shared_run(mode)[1], ref)
    net = net_for(TINY, impl)
    if plant is not None:
        plant(net)
    return compare_gradients(mindspore_gradients(net, x, y), ref)


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
@pytest.mark.parametrize('impl', IMPLS)
def test_gradient_parity_per_impl(impl, mode):
    report = gradients(impl, mode)
    assert report['passed'], describe_gradients(report)


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
@pytest.mark.parametrize('impl', IMPLS)
def test_wrong_input_size_is_refused(impl, mode):
    """The tap index is built for the model's size: another size must not be gathered silently."""
    set_mode(mode)
    net = mindspore_tnt.create_model(TINY, impl=impl)
    net.set_train(False)
    with pytest.raises(ValueError, match='input is 128x128, the model takes 64x64'):
        net(ms.Tensor(np.zeros((1, 3, 128, 128), np.float32)))


def test_impls_share_parameters():
    """Checkpoints do not depend on the formulation: same names, shapes, conv weight layout."""
    shapes = {impl: {p.name: p.shape for p in mindspore_tnt.create_model(TINY, impl=impl).get_parameters()}
              for impl in IMPLS}
    assert shapes['cpu'] == shapes['standard']
    assert shapes['cpu']['pixel_embed.proj.weight'] == (VARIANTS[TINY]['inner_dim'], 3, 7, 7)


def test_unknown_impl_is_refused():
    with pytest.raises(ValueError, match="'cpu' or 'standard'"):
        mindspore_tnt.create_model(TINY, impl='im2col')


def test_kernel_falls_back_without_a_compiler(monkeypatch):
    with without_compiler(monkeypatch, gelu, 'GELU'):
        set_mode('pynative')
        x = ms.Tensor(np.linspace(-6, 6, 97, dtype=np.float32))
        assert np.array_equal(gelu.GELU(cpu_kernel=True)(x).asnumpy(), ms.nn.GELU(approximate=False)(x).asnumpy())


def test_kernel_builds_again_silently():
    """Where it can build, the kernel builds (or loads from its cache) without a warning."""
    require_cpu_kernels()
    gelu.kernel_ops.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert gelu.kernel_ops() is not None


@pytest.mark.parametrize('required', ['', '1'])
def test_a_kernel_that_did_not_build_skips_or_fails(monkeypatch, required):
    """Without the kernel an ``impl='cpu'`` test is skipped with the build's error; under
    ``TNT_REQUIRE_KERNELS=1`` (CI) it fails."""
    monkeypatch.setenv('CXX', '/nonexistent/c++')
    monkeypatch.setenv('TNT_REQUIRE_KERNELS', required)
    gelu.kernel_ops.cache_clear()
    try:
        with pytest.raises(pytest.fail.Exception if required else pytest.skip.Exception,
                           match="CPU GELU kernel, which did not build: .*/nonexistent/c"):
            net_for(TINY, 'cpu')
    finally:
        monkeypatch.undo()
        gelu.kernel_ops.cache_clear()


@pytest.mark.parametrize('stride,legacy', [(4, False), (4, True), (2, False), (3, False), (5, False)])
def test_tap_index_is_torch_convolution(stride, legacy):
    """The gather + matmul of ``impl='cpu'``, in numpy, against torch_ref's convolution
    (strides that do not divide the patch size included; legacy pads at the image border)."""
    import torch
    import torch_ref
    torch.manual_seed(0)
    embed = torch_ref.tnt.PixelEmbed(img_size=48, patch_size=16, in_chans=3, in_dim=5, stride=stride, legacy=legacy)
    x = torch.randn(2, 3, 48, 48)
    words = embed.new_patch_size ** 2
    with torch.no_grad():
        want = embed(x, torch.zeros(1, 5, embed.new_patch_size, embed.new_patch_size)).double().numpy()
    pixels = np.concatenate([x.double().numpy().transpose(0, 2, 3, 1).reshape(2, -1, 3), np.zeros((2, 1, 3))], 1)
    index = conv_tap_index(embed.grid_size, 16, stride, 7, per_patch=not legacy)
    taps = pixels[:, index].reshape(2 * embed.num_patches * words, -1)
    weight = embed.proj.weight.detach().double().numpy().transpose(0, 2, 3, 1).reshape(5, -1)
    got = (taps @ weight.T + embed.proj.bias.detach().double().numpy()).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def _image_border_padding(net):
    """The legacy index on a per-patch model: taps at patch borders read the neighbouring patch."""
    pe = net.pixel_embed
    pe.tap_index = ms.Tensor(conv_tap_index(pe.grid_size, pe.patch_size, 4, 7, per_patch=False))


def _taps_transposed(net):
    """Kernel taps read in (kx, ky) order: a transposed 7x7 kernel."""
    pe = net.pixel_embed
    index = conv_tap_index(pe.grid_size, pe.patch_size, 4, 7, per_patch=True).reshape(-1, 7, 7)
    pe.tap_index = ms.Tensor(np.ascontiguousarray(index.transpose(0, 2, 1)).reshape(-1))


@pytest.mark.parametrize('plant', [_image_border_padding, _taps_transposed])
def test_catches_wrong_tap_index(plant):
    set_mode('pynative')
    _, x, _, ref, _ = reference(TINY)
    net = net_for(TINY, 'cpu')
    plant(net)
    report = compare_outputs(mindspore_outputs(net, x), ref)
    assert not report['passed'], 'the planted fault went unnoticed'
    failure = report['first_failure']
    assert (failure['stage'], failure['stream']) == ('embed', 'inner'), describe_failure(report)


def _gelu_gradient_without_pdf_term(net):
    """Block 2's inner GELU (fc1's bias added inside it) with the kernel's forward but
    dz = dy·Φ(z), z = x + b: the z·φ(z) term lost."""
    def bprop(x, b, out, dout):
        dz = dout * 0.5 * (1. + ops.erf((x + b) * 0.7071067811865476))
        return dz, dz.sum(axis=0)
    act = net.blocks[2].mlp_in.act
    act.bias_kernel = ops.Custom(act.bias_kernel.func, out_shape=lambda x, b: x, out_dtype=lambda x, b: x,
                                 func_type='aot', bprop=bprop)


def test_catches_wrong_gelu_gradient():
    report = gradients('cpu', 'pynative', _gelu_gradient_without_pdf_term)
    assert not report['passed'], 'the planted fault went unnoticed'
    # upstream of the fault (block 2's inner MLP and before) the gradients change, downstream not
    assert 'blocks.2.mlp_in.fc1.weight' in report['failing'], describe_gradients(report)
    assert not any(name.startswith('blocks.3.') for name in report['failing']), describe_gradients(report)
