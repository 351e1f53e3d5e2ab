"""TNT (Transformer in Transformer) in MindSpore, numerically matching ``torch_ref``.

Reads line by line like ``torch_ref/tnt.py``: same classes, attributes and order. What
only MindSpore has is the choice of formulation, ``impl`` (``resolve_impl``): on CPU the
pixel embedding's convolution runs as a gather and a matmul (``PixelEmbed.gather_taps``,
``conv_taps.py``), GELU, LayerNorm, the bias adds, drop path's scaling, the inner
attention and the outer attention's head moves and softmax as vectorised kernels (``gelu.py``,
``layernorm.py``, ``dense.py``, ``droppath.py``, ``attention.py``, ``heads.py``, ``softmax.py``);
the outer attention's ``BatchMatMul`` cells serve every backend. Runs in
GRAPH and PYNATIVE mode on CPU, GPU and Ascend. GELU form and LayerNorm epsilons are
constructor arguments (``tnt_common.numerics``).
"""
import math

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import TruncatedNormal, initializer

from mindspore_tnt.attention import SmallHeadAttention, takes
from mindspore_tnt.conv_taps import conv_tap_index
from mindspore_tnt import droppath, heads, softmax
from mindspore_tnt.dense import Dense
from mindspore_tnt.gelu import GELU, bias_inside
from mindspore_tnt.heads import merge_heads, split_heads
from mindspore_tnt.layernorm import LayerNorm
from mindspore_tnt.reuse import reusable
from tnt_common.architecture import (FIRST_STRIDE, INNER_MLP_RATIO, MLP_RATIO, NO_DECAY_NAMES, PATCH_SIZE, PIXEL_KERNEL,
                                     check_global_pool, drop_path_rates, initialise, patch_grid, word_side)
from tnt_common.numerics import PYTORCH, Numerics
from tnt_common.variants import feature_take_indices, model_args, pretrained_cfg, split_tag

IMPLS = ('cpu', 'standard')


def resolve_impl(impl=None):
    """The formulation to build: ``impl``, else 'cpu' on the CPU device target, 'standard' elsewhere.

    'cpu': the pixel embedding's convolution as a gather and a matmul; the exact GELU, every
    LayerNorm, the MLP's and attention's bias adds, drop path's scaling, the attention over short
    sequences and the longer attentions' head moves and softmax as vectorised kernels (MindSpore's CPU
    Conv2D, erf, LayerNorm, BiasAddGrad, Transpose and softmax gradient are slow, its drop-path ops
    hold much memory in training, its small-head attention mostly transposes). 'standard': Conv2d,
    MindSpore's GELU, LayerNorm and attention ops, the path for Ascend and GPU. Both compute the same
    function with the same parameters.
    """
    impl = impl or ('cpu' if ms.get_context('device_target') == 'CPU' else 'standard')
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}: 'cpu' or 'standard'")
    return impl


def trunc_normal_(param, std=0.02):
    """timm's init for TNT: normal with std 0.02, truncated at +-2 (absolute)."""
    param.set_data(initializer(TruncatedNormal(sigma=std, a=-2., b=2.), param.shape, param.dtype))


def init_layer(m):
    """timm's init of one layer: trunc-normal 0.02 Dense weights and zero biases, unit LayerNorms."""
    if isinstance(m, nn.Dense):
        trunc_normal_(m.weight)
        if m.bias is not None:
            m.bias.set_data(ops.zeros_like(m.bias))
    elif isinstance(m, nn.LayerNorm):
        m.gamma.set_data(ops.ones_like(m.gamma))
        m.beta.set_data(ops.zeros_like(m.beta))


class DropPath(nn.Cell):
    """Per-sample stochastic depth: zeroes a sample's residual branch, scales the rest.

    ``noise`` is None by default (the framework's random draw): a callable
    ``noise(shape, dtype)`` returning uniform [0, 1) noise replaces that draw, so that parity
    tests give both frameworks the same masks (``parity.droppath``) and training feeds masks
    drawn on the host, which a resume replays (``tnt_train.droppath``). With ``cpu_kernel=True``
    the scaling ``x / keep_prob * mask`` of fp32 inputs and its gradient run on the CPU kernel
    (``mindspore_tnt.droppath``): the same values, without the memory MindSpore's ops hold.

    ``feed()`` (``TNT`` calls it when any block drops): in training the layer is called with
    the noise, drawn by the model outside the block (``TNT.drop_path_inputs``, the same draws
    in the same order), and its keep probability as a tensor, so that no rate or random draw
    is part of the block's graph and blocks of every rate share one (``reuse``).
    """

    def __init__(self, drop_prob=0., cpu_kernel=False):
        super().__init__()
        self.drop_prob = drop_prob
        self.noise = None
        self.fed = False
        self.cpu_kernel = cpu_kernel
        self.kernel = droppath.kernel_ops() if cpu_kernel and drop_prob > 0. else None
        self.keep = ms.Tensor([1. - drop_prob], ms.float32)

    def feed(self):
        """Take noise and keep probability as arguments in training (a rate of 0 is then fed zeros)."""
        self.fed = True
        self.kernel = droppath.kernel_ops() if self.cpu_kernel else None

    def construct(self, x, noise=None, keep=None, start=0):
        """``x`` scaled per sample; fed: the mask from ``noise[start:start + len(x)]`` and ``keep``."""
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        if noise is not None:
            keep_prob = keep
            mask = ops.floor(noise[start:start + shape[0]].reshape(shape) + keep_prob)
        elif not self.training or self.drop_prob == 0.:
            return x
        else:
            keep_prob, keep = 1. - self.drop_prob, self.keep
            if self.noise is None:
                mask = ops.rand(shape, dtype=x.dtype)
            else:
                mask = self.noise(shape, x.dtype)
            mask = ops.floor(mask + keep_prob)
        if self.kernel is not None and x.dtype == ms.float32:
            return self.kernel(x, mask, keep)
        return x / keep_prob * mask


class Mlp(nn.Cell):
    """fc1 -> GELU (``gelu``: 'erf' exact or 'tanh') -> dropout -> fc2 -> dropout."""

    def __init__(self, in_features, hidden_features, drop=0., gelu=PYTORCH.gelu, impl=None):
        super().__init__()
        cpu = resolve_impl(impl) == 'cpu'
        self.fc1 = Dense(in_features, hidden_features, cpu_kernel=cpu)
        self.act = GELU(approximate=gelu == 'tanh', cpu_kernel=cpu)
        self.drop1 = nn.Dropout(p=drop)
        self.fc2 = Dense(hidden_features, in_features, cpu_kernel=cpu)
        self.drop2 = nn.Dropout(p=drop)

    def construct(self, x):
        x = self.drop1(self.fc1_act(x))
        return self.drop2(self.fc2(x))

    def fc1_act(self, x):
        """act(fc1(x)); on the CPU kernels with an fp32 product, fc1's bias is added inside the GELU kernel."""
        if bias_inside(self.act, self.fc1):
            y = self.fc1.product(x)
            if y.dtype == ms.float32 and self.fc1.bias.dtype == ms.float32:
                return self.act.bias_kernel(y, self.fc1.bias).reshape(x.shape[:-1] + (-1,))
            return self.act(self.fc1.bias_add(y, self.fc1.bias).reshape(x.shape[:-1] + (-1,)))
        return self.act(self.fc1(x))


class Attention(nn.Cell):
    """Multi-head self-attention with a fused q/k projection and a separate v. With
    ``impl='cpu'`` short sequences (the inner attention) run on one CPU kernel
    (``attention.SmallHeadAttention``) where it ``takes`` them (``attention.takes``)."""

    def __init__(self, dim, num_heads, attn_drop=0., proj_drop=0., impl=None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        # a power-of-two scale is exact on q: the scores' bits, on a third of the elements (L = 197, d = 64)
        self.scale_q = math.frexp(self.scale)[0] == 0.5
        self.qk = nn.Dense(dim, dim * 2, has_bias=False)
        self.v = nn.Dense(dim, dim, has_bias=False)
        self.attn_drop = nn.Dropout(p=attn_drop)
        self.proj = Dense(dim, dim, cpu_kernel=resolve_impl(impl) == 'cpu')
        self.proj_drop = nn.Dropout(p=proj_drop)
        self.matmul_qk = ops.BatchMatMul(transpose_b=True)
        self.matmul_av = ops.BatchMatMul()
        self.fused = SmallHeadAttention(num_heads, self.scale, resolve_impl(impl) == 'cpu')
        self.head_moves = heads.kernel_ops() if resolve_impl(impl) == 'cpu' else None
        self.softmax_kernel = softmax.kernel_ops() if resolve_impl(impl) == 'cpu' else None

    def construct(self, x):
        qk = self.qk(x)
        if takes(self.fused.kernel, qk, self.training and self.attn_drop.p > 0):
            return self.proj_drop(self.proj(self.fused(qk, self.v(x))))
        # heads moved by split_heads (with impl='cpu' on a kernel, else a transpose and an unstack:
        # a strided slice costs more than the attention on CPU). BatchMatMul(transpose_b) takes kᵀ in place.
        q, k = split_heads(self.head_moves, qk, 2, self.num_heads)
        v = split_heads(self.head_moves, self.v(x), 1, self.num_heads)
        attn = self.matmul_qk(q * self.scale, k) if self.scale_q else self.matmul_qk(q, k) * self.scale
        attn = self.attn_drop(softmax.softmax(self.softmax_kernel, attn))
        x = merge_heads(self.head_moves, self.matmul_av(attn, v))
        return self.proj_drop(self.proj(x))


@reusable
class Block(nn.Cell):
    """Inner transformer over the words of each sentence, then outer over the sentences."""

    def __init__(self, dim, dim_out, num_pixel, num_heads_in, num_heads_out, mlp_ratio=MLP_RATIO,
                 proj_drop=0., attn_drop=0., drop_path=0., legacy=False, gelu=PYTORCH.gelu,
                 norm_eps=PYTORCH.norm_eps, impl=None):
        super().__init__()
        impl = resolve_impl(impl)
        self.legacy = legacy
        self.norm_in = LayerNorm((dim,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
        self.attn_in = Attention(dim, num_heads_in, attn_drop, proj_drop, impl)
        self.norm_mlp_in = LayerNorm((dim,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
        self.mlp_in = Mlp(dim, dim * INNER_MLP_RATIO, proj_drop, gelu, impl)
        if legacy:
            self.norm1_proj = LayerNorm((dim,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
            self.proj = nn.Dense(dim * num_pixel, dim_out, has_bias=True)
        else:
            self.norm1_proj = LayerNorm((dim * num_pixel,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
            self.proj = nn.Dense(dim * num_pixel, dim_out, has_bias=False)
            self.norm2_proj = LayerNorm((dim_out,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
        self.norm_out = LayerNorm((dim_out,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
        self.attn_out = Attention(dim_out, num_heads_out, attn_drop, proj_drop, impl)
        self.drop_path = DropPath(drop_path, cpu_kernel=impl == 'cpu')
        self.norm_mlp = LayerNorm((dim_out,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), proj_drop, gelu, impl)

    def construct(self, pixel_embed, patch_embed, noise=None, keep=None):
        """``noise``/``keep``: drop path's inputs where the model feeds them (``TNT.drop_path_inputs``)."""
        rows = pixel_embed.shape[0]
        pixel_embed = pixel_embed + self.drop_path(self.attn_in(self.norm_in(pixel_embed)), noise, keep)
        # The second residual add runs in the view norm1_proj reads and the inner stream goes on
        # as its reshape, so that no tensor has three gradient consumers: GRAPH and PYNATIVE
        # mode add three gradient terms in different orders (docs/parity.md, GRAPH vs PYNATIVE).
        B, L, D = patch_embed.shape
        words = pixel_embed.shape
        view = (B, -1, words[-1]) if self.legacy else (B, L - 1, -1)
        sentences = (pixel_embed.reshape(view) +
                     self.drop_path(self.mlp_in(self.norm_mlp_in(pixel_embed)), noise, keep, rows).reshape(view))
        pixel_embed = sentences.reshape(words)
        if self.legacy:
            sentence = self.proj(self.norm1_proj(sentences).reshape(B, L - 1, -1))
        else:
            sentence = self.norm2_proj(self.proj(self.norm1_proj(sentences)))
        patch_embed = ops.cat([patch_embed[:, :1], patch_embed[:, 1:] + sentence], axis=1)
        patch_embed = patch_embed + self.drop_path(self.attn_out(self.norm_out(patch_embed)), noise, keep, 2 * rows)
        patch_embed = patch_embed + self.drop_path(self.mlp(self.norm_mlp(patch_embed)), noise, keep, 2 * rows + B)
        return pixel_embed, patch_embed


class PixelEmbed(nn.Cell):
    """Image -> sentences (B, N, w*w*C), each the flattened w x w words of one patch: a
    ``PIXEL_KERNEL`` conv of stride ``stride`` per patch of ``patch_size`` pixels (legacy:
    over the whole image) plus ``pixel_pos``; w = ``word_side(patch_size, stride)``.

    With ``impl='cpu'`` the convolution is one gather of the input pixels under every
    kernel tap (``conv_tap_index``, precomputed) and one matmul with ``proj``'s weight:
    MindSpore's CPU Conv2D kernel is two orders of magnitude slower. ``'standard'`` runs
    ``proj`` as a convolution.
    """

    def __init__(self, img_size=224, patch_size=PATCH_SIZE, in_chans=3, in_dim=48, stride=FIRST_STRIDE, legacy=False,
                 impl=None):
        super().__init__()
        self.legacy = legacy
        self.patch_size = patch_size
        self.grid_size = (patch_grid(img_size, patch_size),) * 2
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_dim = in_dim
        self.new_patch_size = word_side(patch_size, stride)
        self.proj = nn.Conv2d(in_chans, in_dim, kernel_size=PIXEL_KERNEL, stride=stride, pad_mode='pad',
                              padding=PIXEL_KERNEL // 2, has_bias=True)
        self.impl = resolve_impl(impl)
        if self.impl == 'cpu':
            self.tap_index = ms.Tensor(conv_tap_index(self.grid_size, patch_size, stride, PIXEL_KERNEL, not legacy))
            self.matmul_taps = ops.MatMul(transpose_b=True)

    def construct(self, x, pixel_pos):
        B, C, H, W = x.shape
        gh, gw = self.grid_size
        if H != gh * self.patch_size or W != gw * self.patch_size:
            raise ValueError(f'input is {H}x{W}, the model takes {gh * self.patch_size}x{gw * self.patch_size}')
        if self.impl == 'cpu':
            return self.gather_taps(x, pixel_pos)
        if self.legacy:
            x = self.proj(x)
            p = self.new_patch_size
        else:
            p = self.patch_size
        x = ops.transpose(x.reshape(B, -1, gh, p, gw, p), (0, 2, 4, 1, 3, 5)).reshape(B * gh * gw, -1, p, p)
        if not self.legacy:
            x = self.proj(x)
        return self.to_sentences(ops.swapaxes(x.reshape(B * self.num_patches, self.in_dim, -1), 1, 2), pixel_pos)

    def gather_taps(self, x, pixel_pos):
        """``construct`` of ``impl='cpu'``: (words, taps) @ (out, taps)ᵀ + bias, channels last."""
        B, C, H, W = x.shape
        x = ops.transpose(x, (0, 2, 3, 1)).reshape(B, H * W, C)
        x = ops.cat([x, ops.zeros((B, 1, C), x.dtype)], axis=1)
        taps = ops.gather(x, self.tap_index, 1).reshape(B * self.num_patches * self.new_patch_size ** 2, -1)
        # in the dtype of the input, as ``proj`` would cast them when called (AMP O3)
        weight = ops.transpose(self.proj.weight, (0, 2, 3, 1)).reshape(self.in_dim, -1).astype(taps.dtype)
        return self.to_sentences(ops.bias_add(self.matmul_taps(taps, weight), self.proj.bias.astype(taps.dtype)),
                                 pixel_pos)

    def to_sentences(self, words, pixel_pos):
        """Words (B*N*w*w, C) in any view, plus ``pixel_pos``, as sentences (B, N, w*w*C).

        The add itself runs in the sentence view: ``TNT.embed`` feeds norm1_proj from it and
        the inner stream from its reshape (see ``Block.construct``).
        """
        pos = ops.swapaxes(pixel_pos.reshape(1, self.in_dim, -1), 1, 2).reshape(1, 1, -1)
        return words.reshape(-1, self.num_patches, pos.shape[-1]) + pos


class TNT(nn.Cell):
    """Transformer in Transformer (Han et al., NeurIPS 2021).

    ``gelu`` ('erf' or 'tanh'), ``norm_eps`` (every LayerNorm but the final one) and
    ``final_norm_eps`` (the final ``norm``) are the model's numerics, kept as ``numerics``.
    ``impl`` ('cpu' or 'standard', by default 'cpu' on the CPU device target) picks how
    the pixel embedding's convolution and GELU are computed (see ``resolve_impl``);
    parameters and results are the same either way. ``weight_init='skip'`` leaves out
    timm's init, for weights loaded right after.
    """

    def __init__(self, img_size=224, patch_size=PATCH_SIZE, in_chans=3, num_classes=1000,
                 global_pool='token', embed_dim=768, inner_dim=48, depth=12,
                 num_heads_inner=4, num_heads_outer=12, mlp_ratio=MLP_RATIO, drop_rate=0.,
                 pos_drop_rate=0., proj_drop_rate=0., attn_drop_rate=0., drop_path_rate=0.,
                 first_stride=FIRST_STRIDE, legacy=False, gelu=PYTORCH.gelu, norm_eps=PYTORCH.norm_eps,
                 final_norm_eps=PYTORCH.final_norm_eps, impl=None, weight_init=''):
        super().__init__()
        check_global_pool(global_pool)
        self.numerics = Numerics(gelu, norm_eps, final_norm_eps)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.embed_dim = embed_dim
        impl = resolve_impl(impl)
        self.pixel_embed = PixelEmbed(img_size, patch_size, in_chans, inner_dim, first_stride, legacy, impl)
        num_patches = self.pixel_embed.num_patches
        self.num_patches = num_patches
        new_patch_size = self.pixel_embed.new_patch_size
        num_pixel = new_patch_size ** 2
        self.norm1_proj = LayerNorm((num_pixel * inner_dim,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
        self.proj = nn.Dense(num_pixel * inner_dim, embed_dim)
        self.norm2_proj = LayerNorm((embed_dim,), epsilon=norm_eps, cpu_kernel=impl == 'cpu')
        self.cls_token = ms.Parameter(ops.zeros((1, 1, embed_dim), ms.float32), name='cls_token')
        self.patch_pos = ms.Parameter(ops.zeros((1, num_patches + 1, embed_dim), ms.float32), name='patch_pos')
        self.pixel_pos = ms.Parameter(ops.zeros((1, inner_dim, new_patch_size, new_patch_size), ms.float32),
                                      name='pixel_pos')
        self.pos_drop = nn.Dropout(p=pos_drop_rate)
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.CellList([
            Block(inner_dim, embed_dim, num_pixel, num_heads_inner, num_heads_outer, mlp_ratio,
                  proj_drop_rate, attn_drop_rate, dpr[i], legacy, gelu, norm_eps, impl)
            for i in range(depth)])
        if drop_path_rate > 0.:
            for blk in self.blocks:
                blk.drop_path.feed()
        self.norm = LayerNorm((embed_dim,), epsilon=final_norm_eps, cpu_kernel=impl == 'cpu')
        self.head_drop = nn.Dropout(p=drop_rate)
        self.head = nn.Dense(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        initialise(self, weight_init)

    def init_weights(self):
        """timm's init: trunc-normal 0.02 on tokens, positions and Dense weights."""
        for p in (self.cls_token, self.patch_pos, self.pixel_pos):
            trunc_normal_(p)
        for _, m in self.cells_and_names():
            init_layer(m)

    def no_weight_decay(self):
        """Parameter names excluded from weight decay besides norms and biases."""
        return set(NO_DECAY_NAMES)

    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=None):
        """New head of ``num_classes`` (0: none); ``global_pool`` 'token', 'avg' or '' (no pooling)."""
        if global_pool is not None:
            check_global_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Dense(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        init_layer(self.head)

    def embed(self, x):
        """Image -> (inner tokens (B*N, w*w, C), outer tokens (B, N+1, D))."""
        B = x.shape[0]
        sentences = self.pixel_embed(x, self.pixel_pos)
        pixel_embed = sentences.reshape(B * self.num_patches, -1, self.pixel_embed.in_dim)
        patch_embed = self.norm2_proj(self.proj(self.norm1_proj(sentences)))
        patch_embed = ops.cat([ops.broadcast_to(self.cls_token, (B, -1, -1)), patch_embed], axis=1)
        patch_embed = self.pos_drop(patch_embed + self.patch_pos)
        return pixel_embed, patch_embed

    def drop_path_inputs(self, blk, B, dtype):
        """The (noise, keep) ``blk`` takes in training when its drop path is fed, else ().

        The noise of the block's four drop-path calls (two over the B*N inner rows, two over the
        B images), drawn here in the order the block makes them: a hook's draws (``DropPath.noise``),
        one framework draw, or zeros for a rate of 0 (then x / 1 * 1: x exactly).
        """
        drop = blk.drop_path
        if not (self.training and drop.fed):
            return ()
        rows = (B * self.num_patches,) * 2 + (B,) * 2
        if drop.drop_prob == 0.:
            noise = ms.mutable(ops.zeros((sum(rows),), dtype))
        elif drop.noise is None:
            noise = ops.rand((sum(rows),), dtype=dtype)
        else:
            noise = ops.cat([drop.noise((n, 1, 1), dtype).reshape(-1) for n in rows])
        return noise, ms.mutable(drop.keep)

    def forward_stages(self, x):
        """Final normed outer tokens and ((inner, outer) after the embedding and each block)."""
        pixel_embed, patch_embed = self.embed(x)
        stages = ((pixel_embed, patch_embed),)
        for blk in self.blocks:
            pixel_embed, patch_embed = blk(pixel_embed, patch_embed,
                                           *self.drop_path_inputs(blk, x.shape[0], patch_embed.dtype))
            stages = stages + ((pixel_embed, patch_embed),)
        return self.norm(patch_embed), stages

    def forward_intermediates(self, x, indices=None, return_prefix_tokens=False, norm=False,
                              stop_early=False, output_fmt='NCHW', intermediates_only=False):
        """timm's ``forward_intermediates``: the outer tokens after the blocks ``indices`` selects.

        ``indices``: None (every block), an int n (the last n) or block indices (negative from
        the end). Intermediates are the patch tokens, cls removed, in block order: (B, D, H/P,
        W/P) for patch size P and ``output_fmt`` 'NCHW', (B, N, D) for 'NLC'; ``norm``
        applies the final norm to them; ``return_prefix_tokens`` pairs each with its cls
        token (B, 1, D). Returns (final normed outer tokens, intermediates), or the
        intermediates alone with ``intermediates_only``; ``stop_early`` skips the blocks
        after the last one selected.
        Called directly it runs op by op; ``ForwardIntermediates`` compiles it in GRAPH mode.
        """
        if output_fmt not in ('NCHW', 'NLC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.blocks), indices)
        B = x.shape[0]
        gh, gw = self.pixel_embed.grid_size
        pixel_embed, patch_embed = self.embed(x)
        intermediates = []
        for i in range(max_index + 1 if stop_early else len(self.blocks)):
            pixel_embed, patch_embed = self.blocks[i](pixel_embed, patch_embed,
                                                      *self.drop_path_inputs(self.blocks[i], B, patch_embed.dtype))
            if i in take:
                intermediates.append(self.norm(patch_embed) if norm else patch_embed)
        prefix_tokens = [y[:, :1] for y in intermediates]
        intermediates = [y[:, 1:] for y in intermediates]
        if output_fmt == 'NCHW':
            intermediates = [ops.transpose(y.reshape(B, gh, gw, -1), (0, 3, 1, 2)) for y in intermediates]
        if return_prefix_tokens:
            intermediates = [(y, p) for y, p in zip(intermediates, prefix_tokens)]
        if intermediates_only:
            return intermediates
        return self.norm(patch_embed), intermediates

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        """Drop the blocks after the last one ``indices`` selects, optionally the final norm and
        the head (as timm); returns the selected block indices."""
        take, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take

    def forward_features(self, x):
        pixel_embed, patch_embed = self.embed(x)
        for blk in self.blocks:
            pixel_embed, patch_embed = blk(pixel_embed, patch_embed,
                                           *self.drop_path_inputs(blk, x.shape[0], patch_embed.dtype))
        return self.norm(patch_embed)

    def forward_head(self, x, pre_logits=False):
        if self.global_pool == 'avg':
            x = x[:, 1:].mean(axis=1)
        elif self.global_pool == 'token':
            x = x[:, 0]
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))


class WithStages(nn.Cell):
    """Compiles ``forward_stages`` and the head as one graph: returns (logits, stages)."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)
        self.model = model

    def construct(self, x):
        features, stages = self.model.forward_stages(x)
        return self.model.forward_head(features), stages


class ForwardIntermediates(nn.Cell):
    """``model.forward_intermediates(x, **kwargs)`` as a Cell: one graph in GRAPH mode, the
    keyword arguments (``indices``, ``norm``, ``output_fmt``, ...) static."""

    def __init__(self, model, **kwargs):
        super().__init__(auto_prefix=False)
        self.model = model
        self.kwargs = kwargs

    def construct(self, x):
        return self.model.forward_intermediates(x, **self.kwargs)


def create_model(name, **kwargs):
    """Build ``name``: a variant, bare or tagged as timm (``tnt_s_patch16_224.in1k``, see
    ``tnt_common.variants.PRETRAINED_CFGS``), with that tag's ``pretrained_cfg``; ``kwargs``
    override (num_classes, img_size, drop_path_rate, gelu, impl, ...).
    """
    arch, tag = split_tag(name)
    model = TNT(**dict(model_args(arch), **kwargs))
    model.pretrained_cfg = pretrained_cfg(f'{arch}.{tag}')
    return model
