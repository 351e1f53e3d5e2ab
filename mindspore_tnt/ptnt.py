"""PyramidTNT in MindSpore, numerically matching ``torch_ref.ptnt``.

Reads line by line like ``torch_ref/ptnt.py``: same classes, attributes and order.
``DropPath``, ``Mlp`` (with its ``impl``: the CPU GELU and bias kernels) and the trunc-normal
init are TNT's (``mindspore_tnt.tnt``); with ``impl='cpu'`` the inner attention runs on the CPU
attention kernel (``attention.py``), the attention's bias adds on the bias kernel (``dense.py``),
the convolutions as gather + matmul, channels last (``Conv2d``, ``BatchNorm2d``). Runs in GRAPH
and PYNATIVE mode on CPU. GELU form and LayerNorm epsilons are constructor arguments
(``tnt_common.numerics``).

Parameter names are the official torch keys but for MindSpore's own names of norm
parameters (``convert.keymap.PYRAMID_TO_MINDSPORE``): LayerNorm ``weight``/``bias`` ->
``gamma``/``beta``; stem BatchNorm ``weight``/``bias``/``running_mean``/``running_var`` ->
``gamma``/``beta``/``moving_mean``/``moving_variance``; torch's ``num_batches_tracked`` has no
counterpart (unused with a fixed momentum). BatchNorm momentum in MindSpore's convention: 1 - torch's.
"""
import math

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import Normal, initializer

from mindspore_tnt.attention import SmallHeadAttention, takes
from mindspore_tnt.conv_taps import image_tap_index
from mindspore_tnt import heads, softmax
from mindspore_tnt.dense import Dense
from mindspore_tnt.heads import merge_heads, split_heads
from mindspore_tnt.layernorm import LayerNorm
from mindspore_tnt.tnt import DropPath, Mlp, init_layer, resolve_impl, trunc_normal_
from tnt_common.architecture import initialise
from tnt_common.numerics import PYTORCH, Numerics
from tnt_common.pyramid import (BN_EPS, BN_MOMENTUM, CONV_KERNEL, MERGE_STRIDE, MLP_RATIO, NO_DECAY_NAMES, NUM_WORDS,
                                SR_RATIOS, STEM_BRANCHES, STEM_STRIDE, WORD_SIDE, drop_path_rates, grid_sides,
                                has_inner, stage_dims, stage_names, stem_layers)
from tnt_common.variants import model_args, pretrained_cfg, split_tag


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (3x3, bias, zero padding 1) on an ``in_side`` x ``in_side`` input, with
    the same parameters either way. ``impl='standard'``: the convolution, NCHW in and out.
    ``impl='cpu'``: channels last, as one gather of the input pixels under every kernel tap
    (``image_tap_index``, precomputed) and one matmul (MindSpore's CPU Conv2D is slow): the
    input reshapes to (B, in_side**2, C), the output is (B * out pixels, C_out, 1, 1), rows
    in row-major pixel order, a view BatchNorm2d normalises per channel as it does NCHW."""

    def __init__(self, dim_in, dim_out, stride, in_side, impl='standard'):
        super().__init__(dim_in, dim_out, CONV_KERNEL, stride=stride, pad_mode='pad', padding=CONV_KERNEL // 2,
                         has_bias=True)
        self.impl = impl
        if impl == 'cpu':
            self.in_pixels = in_side * in_side
            self.tap_index = ms.Tensor(image_tap_index(in_side, in_side, stride, CONV_KERNEL))
            self.matmul_taps = ops.MatMul(transpose_b=True)

    def construct(self, x):
        if self.impl == 'cpu':
            return self.gather_taps(x)
        return self.bias_add(self.conv2d(x, self.weight), self.bias)

    def gather_taps(self, x):
        C = self.in_channels
        x = x.reshape(-1, self.in_pixels, C)
        x = ops.cat([x, ops.zeros((x.shape[0], 1, C), x.dtype)], axis=1)
        taps = ops.gather(x, self.tap_index, 1).reshape(-1, CONV_KERNEL * CONV_KERNEL * C)
        # in the dtype of the input, as the convolution would cast them when called (AMP O3)
        weight = ops.transpose(self.weight, (0, 2, 3, 1)).reshape(self.out_channels, -1).astype(taps.dtype)
        y = ops.bias_add(self.matmul_taps(taps, weight), self.bias.astype(taps.dtype))
        return y.reshape(-1, self.out_channels, 1, 1)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` of ``Conv2d``'s output. With ``impl='cpu'`` in training the (pixels, C,
    1, 1) view is normalised with its statistics, and their gradients, taken in float64, and the
    running statistics updated as ``nn.BatchNorm2d`` does (momentum, unbiased variance):
    MindSpore's CPU BatchNorm sums in float32 less accurately than torch, by a margin that
    depends on the machine, and the stem's weight gradients sum what it removed (docs/ptnt.md).
    In inference (running statistics, no sums) the view is normalised as it is."""

    def __init__(self, num_features, impl='standard', **kwargs):
        super().__init__(num_features, **kwargs)
        self.impl = impl

    def construct(self, x):
        if self.impl != 'cpu' or not self.training or self.use_batch_statistics is not None:
            return super().construct(x)
        rows, C = x.shape[0], x.shape[1]
        x64 = x.reshape(rows, C).astype(ms.float64)
        mean = x64.mean(0)
        centred = x64 - mean
        var = (centred * centred).mean(0)
        y = centred / ops.sqrt(var + self.eps) * self.gamma.astype(ms.float64) + self.beta.astype(ms.float64)
        updated = ops.depend(self.running_update(self.moving_mean, mean),
                             self.running_update(self.moving_variance, var * (rows / (rows - 1))))
        return ops.depend(y.astype(x.dtype).reshape(rows, C, 1, 1), updated)

    def running_update(self, running, batch):
        """``running`` moved towards ``batch`` (no gradient) by ``momentum``, as BatchNorm updates it."""
        batch = ops.stop_gradient(batch)
        return ops.assign(running, (running * (1. - self.momentum) + batch * self.momentum).astype(running.dtype))


def conv_bn_relu(dim_in, dim_out, stride, in_side=1, impl='standard'):
    """Conv3x3 (bias, zero padding 1) -> BatchNorm (``BN_EPS``, MindSpore's momentum 1 - ``BN_MOMENTUM``) -> ReLU."""
    return [Conv2d(dim_in, dim_out, stride, in_side, impl),
            BatchNorm2d(dim_out, eps=BN_EPS, momentum=1. - BN_MOMENTUM, impl=impl), nn.ReLU()]


class Attention(nn.Cell):
    """Multi-head attention, q and fused kv without bias; with ``sr_ratio`` > 1 the keys and
    values come from the tokens average-pooled ``sr_ratio`` x ``sr_ratio``, then Dense and
    LayerNorm. ``relative_pos`` is added to the scaled scores before the softmax. With
    ``impl='cpu'``, ``sr_ratio`` 1 and no ``relative_pos``, short sequences (the inner
    attention) run on one CPU kernel (``attention.SmallHeadAttention``) where it ``takes`` them."""

    def __init__(self, dim, num_heads, sr_ratio=1, attn_drop=0., proj_drop=0., norm_eps=PYTORCH.norm_eps,
                 impl='standard'):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Dense(dim, dim, has_bias=False)
        self.kv = nn.Dense(dim, dim * 2, has_bias=False)
        self.attn_drop = nn.Dropout(p=attn_drop)
        self.proj = Dense(dim, dim, cpu_kernel=impl == 'cpu')
        self.proj_drop = nn.Dropout(p=proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.pool = nn.AvgPool2d(sr_ratio, stride=sr_ratio)
            self.linear = Dense(dim, dim, cpu_kernel=impl == 'cpu')
            self.norm = LayerNorm((dim,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
        self.matmul_qk = ops.BatchMatMul(transpose_b=True)
        self.matmul_av = ops.BatchMatMul()
        self.fused = SmallHeadAttention(num_heads, self.scale, impl == 'cpu' and sr_ratio == 1)
        self.head_moves = heads.kernel_ops() if impl == 'cpu' else None
        self.softmax_kernel = softmax.kernel_ops() if impl == 'cpu' else None

    def construct(self, x, H, W, relative_pos=None):
        B, L, D = x.shape
        q = self.q(x)
        if relative_pos is None and takes(self.fused.kernel, q, self.training and self.attn_drop.p > 0):
            return self.proj_drop(self.proj(self.fused(q, self.kv(x))))
        q = split_heads(self.head_moves, q, 1, self.num_heads)
        if self.sr_ratio > 1:
            x = ops.swapaxes(self.pool(ops.swapaxes(x, 1, 2).reshape(B, D, H, W)).reshape(B, D, -1), 1, 2)
            x = self.norm(self.linear(x))
        k, v = split_heads(self.head_moves, self.kv(x), 2, self.num_heads)
        attn = self.matmul_qk(q, k) * self.scale
        if relative_pos is not None:
            attn = attn + relative_pos
        attn = self.attn_drop(softmax.softmax(self.softmax_kernel, attn))
        x = merge_heads(self.head_moves, self.matmul_av(attn, v))
        return self.proj_drop(self.proj(x))


class Block(nn.Cell):
    """Optional inner transformer over the words of each sentence (``inner``), its sentences
    added to the outer tokens, then the outer transformer with spatial reduction."""

    def __init__(self, outer_dim, inner_dim, outer_heads, inner_heads, inner=True, sr_ratio=1, proj_drop=0.,
                 attn_drop=0., drop_path=0., gelu=PYTORCH.gelu, norm_eps=PYTORCH.norm_eps, impl=None):
        super().__init__()
        impl = resolve_impl(impl)
        self.inner = inner
        if inner:
            self.inner_norm1 = LayerNorm((NUM_WORDS * inner_dim,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
            self.inner_attn = Attention(inner_dim, inner_heads, 1, attn_drop, proj_drop, norm_eps, impl)
            self.inner_norm2 = LayerNorm((NUM_WORDS * inner_dim,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
            self.inner_mlp = Mlp(inner_dim, inner_dim * MLP_RATIO, proj_drop, gelu, impl)
            self.proj_norm1 = LayerNorm((NUM_WORDS * inner_dim,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
            self.proj = nn.Dense(NUM_WORDS * inner_dim, outer_dim, has_bias=False)
            self.proj_norm2 = LayerNorm((outer_dim,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
        self.outer_norm1 = LayerNorm((outer_dim,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
        self.outer_attn = Attention(outer_dim, outer_heads, sr_ratio, attn_drop, proj_drop, norm_eps, impl)
        self.drop_path = DropPath(drop_path, cpu_kernel=impl == 'cpu')
        self.outer_norm2 = LayerNorm((outer_dim,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
        self.outer_mlp = Mlp(outer_dim, outer_dim * MLP_RATIO, proj_drop, gelu, impl)

    def construct(self, inner_tokens, outer_tokens, H, W, relative_pos):
        B, N, D = outer_tokens.shape
        if self.inner:
            words = inner_tokens.shape
            # the inner norms see a whole sentence (16 words x inner dim), not one word
            inner_tokens = inner_tokens + self.drop_path(
                self.inner_attn(self.inner_norm1(inner_tokens.reshape(B, N, -1)).reshape(words), WORD_SIDE, WORD_SIDE))
            inner_tokens = inner_tokens + self.drop_path(
                self.inner_mlp(self.inner_norm2(inner_tokens.reshape(B, N, -1)).reshape(words)))
            outer_tokens = outer_tokens + self.proj_norm2(self.proj(self.proj_norm1(inner_tokens.reshape(B, N, -1))))
        outer_tokens = outer_tokens + self.drop_path(self.outer_attn(self.outer_norm1(outer_tokens), H, W,
                                                                     relative_pos))
        outer_tokens = outer_tokens + self.drop_path(self.outer_mlp(self.outer_norm2(outer_tokens)))
        return inner_tokens, outer_tokens


class SentenceAggregation(nn.Cell):
    """Outer tokens on an H x W grid -> LayerNorm -> Conv3x3 stride 2 -> the H/2 x W/2 grid."""

    def __init__(self, dim_in, dim_out, norm_eps=PYTORCH.norm_eps, in_side=1, impl='standard'):
        super().__init__()
        self.impl = impl
        self.norm = LayerNorm((dim_in,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
        self.conv = nn.SequentialCell([Conv2d(dim_in, dim_out, MERGE_STRIDE, in_side, impl)])

    def construct(self, x, H, W):
        B, N, D = x.shape
        if self.impl == 'cpu':   # the tokens are channels last already
            return self.conv(self.norm(x)).reshape(B, N // (MERGE_STRIDE * MERGE_STRIDE), -1)
        x = self.conv(ops.swapaxes(self.norm(x), 1, 2).reshape(B, D, H, W))
        return ops.swapaxes(x.reshape(B, x.shape[1], -1), 1, 2)


class WordAggregation(nn.Cell):
    """Words of each 2x2 group of sentences tiled into one 8x8 grid (``tile``), LayerNorm
    first, then Conv3x3 stride 2 -> 16 words of ``dim_out`` per merged sentence."""

    def __init__(self, dim_in, dim_out, norm_eps=PYTORCH.norm_eps, impl='standard'):
        super().__init__()
        self.dim_out = dim_out
        self.impl = impl
        self.norm = LayerNorm((dim_in,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
        self.conv = nn.SequentialCell([Conv2d(dim_in, dim_out, MERGE_STRIDE, MERGE_STRIDE * WORD_SIDE, impl)])

    def tile(self, x, H, W):
        """(B*H*W, 16, C) words -> (B*H/2*W/2, C, 8, 8): sentence (2i+r, 2j+c) fills rows
        4r..4r+3 and columns 4c..4c+3 of the grid of merged sentence (i, j). ``impl='cpu'``:
        channels last, (B*H/2*W/2, 8, 8, C)."""
        C = x.shape[-1]
        s = WORD_SIDE
        m = MERGE_STRIDE
        x = ops.transpose(x.reshape(-1, H // m, m, W // m, m, s, s, C), (0, 1, 3, 2, 5, 4, 6, 7))
        if self.impl == 'cpu':
            return x.reshape(-1, m * s, m * s, C)
        return ops.transpose(x.reshape(-1, m * s, m * s, C), (0, 3, 1, 2))

    def construct(self, x, H, W):
        x = self.conv(self.tile(self.norm(x), H, W))
        if self.impl == 'cpu':
            return x.reshape(-1, NUM_WORDS, self.dim_out)
        return ops.swapaxes(x.reshape(-1, self.dim_out, NUM_WORDS), 1, 2)


class Stem(nn.Cell):
    """Image -> inner tokens (B*N, 16, c) and outer tokens (B, N, D), N = (H/8)*(W/8):
    conv-BN-ReLU stacks from a shared stride-2 layer; the inner branch's 4x4 pixel blocks
    are the words of a sentence (row-major), the outer branch reaches 1/8 of the input."""

    def __init__(self, img_size=256, in_chans=3, outer_dim=128, inner_dim=8, impl='standard'):
        super().__init__()
        self.inner_dim = inner_dim
        self.impl = impl
        self.grid_size = (grid_sides(img_size)[0],) * 2
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        layers = {branch: [] for branch in STEM_BRANCHES}
        for branch, dim_in, dim_out, stride, divisor in stem_layers(in_chans, inner_dim, outer_dim):
            layers[branch] += conv_bn_relu(dim_in, dim_out, stride, img_size // divisor, impl)
        self.common_conv = nn.SequentialCell(layers['common_conv'])
        self.inner_convs = nn.SequentialCell(layers['inner_convs'])
        self.outer_convs = nn.SequentialCell(layers['outer_convs'])

    def construct(self, x):
        B, _, H, W = x.shape
        gh, gw = self.grid_size
        if H != STEM_STRIDE * gh or W != STEM_STRIDE * gw:
            raise ValueError(f'input is {H}x{W}, the model takes {STEM_STRIDE * gh}x{STEM_STRIDE * gw}')
        if self.impl == 'cpu':
            return self.channels_last(x)
        x = self.common_conv(x)
        s = WORD_SIDE
        inner_tokens = self.inner_convs(x).reshape(B, self.inner_dim, gh, s, gw, s)
        inner_tokens = ops.transpose(inner_tokens, (0, 2, 4, 3, 5, 1)).reshape(B * gh * gw, NUM_WORDS, self.inner_dim)
        outer_tokens = ops.transpose(self.outer_convs(x), (0, 2, 3, 1)).reshape(B, gh * gw, -1)
        return inner_tokens, outer_tokens

    def channels_last(self, x):
        """``construct`` of ``impl='cpu'``: every layer channels last (``Conv2d``), one transpose
        of the image in, one of the inner tokens out."""
        B = x.shape[0]
        gh, gw = self.grid_size
        s = WORD_SIDE
        x = self.common_conv(ops.transpose(x, (0, 2, 3, 1)))
        inner_tokens = self.inner_convs(x).reshape(B, gh, s, gw, s, self.inner_dim)
        inner_tokens = ops.transpose(inner_tokens, (0, 1, 3, 2, 4, 5)).reshape(B * gh * gw, NUM_WORDS, self.inner_dim)
        outer_tokens = self.outer_convs(x).reshape(B, gh * gw, -1)
        return inner_tokens, outer_tokens


class Stage(nn.Cell):
    """Blocks on one grid, sharing the stage's learned ``relative_pos`` (heads, N, N/sr^2)."""

    def __init__(self, num_blocks, outer_dim, inner_dim, outer_heads, inner_heads, num_patches, sr_ratio=1,
                 proj_drop=0., attn_drop=0., drop_path=(), gelu=PYTORCH.gelu, norm_eps=PYTORCH.norm_eps, impl=None):
        super().__init__()
        self.blocks = nn.CellList([
            Block(outer_dim, inner_dim, outer_heads, inner_heads, has_inner(j, num_blocks), sr_ratio, proj_drop,
                  attn_drop, drop_path[j], gelu, norm_eps, impl)
            for j in range(num_blocks)])
        self.relative_pos = ms.Parameter(
            ops.zeros((1, outer_heads, num_patches, num_patches // sr_ratio ** 2), ms.float32), name='relative_pos')

    def construct(self, inner_tokens, outer_tokens, H, W):
        for blk in self.blocks:
            inner_tokens, outer_tokens = blk(inner_tokens, outer_tokens, H, W, self.relative_pos)
        return inner_tokens, outer_tokens


class PyramidTNT(nn.Cell):
    """PyramidTNT (Han et al. 2022, arXiv 2201.00978): four TNT stages on grids at strides
    8, 16, 32, 64, merged by convolutions; mean-pooled head.

    ``outer_dim``, ``inner_dim``, ``outer_heads`` and ``inner_heads`` are stage 0's; later
    stages scale them by ``STAGE_SCALE``. ``gelu``, ``norm_eps`` and ``final_norm_eps`` are
    the numerics, kept as ``numerics``; ``impl`` picks the GELU kernel as in ``TNT``.
    ``weight_init='skip'`` leaves out the official init, for weights loaded right after.
    """

    def __init__(self, img_size=256, in_chans=3, num_classes=1000, outer_dim=128, inner_dim=8,
                 depths=(2, 8, 4, 2), outer_heads=4, inner_heads=2, drop_rate=0., pos_drop_rate=0.,
                 proj_drop_rate=0., attn_drop_rate=0., drop_path_rate=0., gelu=PYTORCH.gelu,
                 norm_eps=PYTORCH.norm_eps, final_norm_eps=PYTORCH.final_norm_eps, impl=None, weight_init=''):
        super().__init__()
        self.numerics = Numerics(gelu, norm_eps, final_norm_eps)
        self.num_classes = num_classes
        self.depths = tuple(depths)
        outer_dims, inner_dims = stage_dims(outer_dim), stage_dims(inner_dim)
        outer_heads, inner_heads = stage_dims(outer_heads), stage_dims(inner_heads)
        self.num_features = outer_dims[-1]
        self.grid_sides = grid_sides(img_size)
        impl = resolve_impl(impl)
        self.patch_embed = Stem(img_size, in_chans, outer_dims[0], inner_dims[0], impl)
        num_patches = self.patch_embed.num_patches
        self.outer_pos = ms.Parameter(ops.zeros((1, num_patches, outer_dims[0]), ms.float32), name='outer_pos')
        self.inner_pos = ms.Parameter(ops.zeros((1, NUM_WORDS, inner_dims[0]), ms.float32), name='inner_pos')
        self.pos_drop = nn.Dropout(p=pos_drop_rate)
        dpr = drop_path_rates(drop_path_rate, self.depths)
        self.word_merges = nn.CellList([WordAggregation(inner_dims[i - 1], inner_dims[i], norm_eps, impl)
                                        for i in range(1, len(self.depths))])
        self.sentence_merges = nn.CellList([SentenceAggregation(outer_dims[i - 1], outer_dims[i], norm_eps,
                                                                self.grid_sides[i - 1], impl)
                                            for i in range(1, len(self.depths))])
        self.stages = nn.CellList([
            Stage(d, outer_dims[i], inner_dims[i], outer_heads[i], inner_heads[i], self.grid_sides[i] ** 2,
                  SR_RATIOS[i], proj_drop_rate, attn_drop_rate, dpr[i], gelu, norm_eps, impl)
            for i, d in enumerate(self.depths)])
        self.norm = LayerNorm((outer_dims[-1],), epsilon=final_norm_eps, cpu_kernel=impl == 'cpu')
        self.head_drop = nn.Dropout(p=drop_rate)
        self.head = nn.Dense(outer_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        initialise(self, weight_init)

    def init_weights(self):
        """The official init: trunc-normal 0.02 on positions and Dense weights, normal
        sqrt(2 / fan_out) on convolutions, standard normal ``relative_pos``."""
        for p in (self.outer_pos, self.inner_pos):
            trunc_normal_(p)
        for stage in self.stages:
            stage.relative_pos.set_data(initializer(Normal(sigma=1.), stage.relative_pos.shape, ms.float32))
        for _, m in self.cells_and_names():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.set_data(initializer(Normal(sigma=math.sqrt(2. / fan_out)), m.weight.shape, ms.float32))
                m.bias.set_data(ops.zeros_like(m.bias))
            else:
                init_layer(m)

    def no_weight_decay(self):
        """Parameter names excluded from weight decay besides norms and biases."""
        return set(NO_DECAY_NAMES)

    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes):
        """New head of ``num_classes`` (0: none)."""
        self.num_classes = num_classes
        self.head = nn.Dense(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        init_layer(self.head)

    def stage_names(self):
        """Names of the entries ``forward_stages`` returns."""
        return stage_names(self.depths)

    def embed(self, x):
        """Image -> (inner tokens (B*N, 16, c), outer tokens (B, N, D)), positions added."""
        inner_tokens, outer_tokens = self.patch_embed(x)
        return inner_tokens + self.inner_pos, outer_tokens + self.pos_drop(self.outer_pos)

    def merge(self, i, inner_tokens, outer_tokens):
        """Tokens of stage ``i - 1`` merged onto the grid of stage ``i``."""
        side = self.grid_sides[i - 1]
        inner_tokens = self.word_merges[i - 1](inner_tokens, side, side)
        outer_tokens = self.sentence_merges[i - 1](outer_tokens, side, side)
        return inner_tokens, outer_tokens

    def forward_stages(self, x):
        """Final normed outer tokens and ((inner, outer) after the stem, each block and each
        merge), in forward order (``stage_names``)."""
        inner_tokens, outer_tokens = self.embed(x)
        stages = ((inner_tokens, outer_tokens),)
        for i, stage in enumerate(self.stages):
            if i:
                inner_tokens, outer_tokens = self.merge(i, inner_tokens, outer_tokens)
                stages = stages + ((inner_tokens, outer_tokens),)
            side = self.grid_sides[i]
            for blk in stage.blocks:
                inner_tokens, outer_tokens = blk(inner_tokens, outer_tokens, side, side, stage.relative_pos)
                stages = stages + ((inner_tokens, outer_tokens),)
        return self.norm(outer_tokens), stages

    def forward_features(self, x):
        inner_tokens, outer_tokens = self.embed(x)
        for i, stage in enumerate(self.stages):
            if i:
                inner_tokens, outer_tokens = self.merge(i, inner_tokens, outer_tokens)
            inner_tokens, outer_tokens = stage(inner_tokens, outer_tokens, self.grid_sides[i], self.grid_sides[i])
        return self.norm(outer_tokens)

    def forward_head(self, x, pre_logits=False):
        x = self.head_drop(x.mean(axis=1))
        return x if pre_logits else self.head(x)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))


def create_model(name, **kwargs):
    """Build PyramidTNT ``name`` (bare or ``architecture.tag``) with that tag's ``pretrained_cfg``;
    ``kwargs`` override (num_classes, drop_path_rate, gelu, impl, ...)."""
    arch, tag = split_tag(name)
    model = PyramidTNT(**dict(model_args(arch), **kwargs))
    model.pretrained_cfg = pretrained_cfg(f'{arch}.{tag}')
    return model
