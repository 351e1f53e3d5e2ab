"""PyramidTNT in PyTorch, state-dict compatible with the official ``tnt_pytorch/pyramid_tnt.py``.

Reads line by line like ``mindspore_tnt/ptnt.py``: same classes, attributes and order.
``DropPath``, ``Mlp`` and the trunc-normal init are TNT's (``torch_ref.tnt``). GELU form and
LayerNorm epsilons are constructor arguments (``tnt_common.numerics``). No SE branch (off
in every published variant); square inputs whose grids merge evenly (``grid_sides``).
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from tnt_common.architecture import initialise
from tnt_common.numerics import PYTORCH, Numerics
from tnt_common.pyramid import (BN_EPS, BN_MOMENTUM, CONV_KERNEL, MERGE_STRIDE, MLP_RATIO, NO_DECAY_NAMES, NUM_WORDS,
                                SR_RATIOS, STEM_BRANCHES, STEM_STRIDE, WORD_SIDE, drop_path_rates, grid_sides,
                                has_inner, stage_dims, stage_names, stem_layers)
from tnt_common.variants import model_args, pretrained_cfg, split_tag
from torch_ref.tnt import DropPath, Mlp, init_layer, trunc_normal_


def conv_bn_relu(dim_in, dim_out, stride):
    """Conv3x3 (bias, zero padding 1) -> BatchNorm (``BN_EPS``, ``BN_MOMENTUM``) -> ReLU."""
    return [nn.Conv2d(dim_in, dim_out, CONV_KERNEL, stride=stride, padding=CONV_KERNEL // 2),
            nn.BatchNorm2d(dim_out, eps=BN_EPS, momentum=BN_MOMENTUM), nn.ReLU()]


class Attention(nn.Module):
    """Multi-head attention, q and fused kv without bias; with ``sr_ratio`` > 1 the keys and
    values come from the tokens average-pooled ``sr_ratio`` x ``sr_ratio``, then Linear and
    LayerNorm. ``relative_pos`` is added to the scaled scores before the softmax."""

    def __init__(self, dim, num_heads, sr_ratio=1, attn_drop=0., proj_drop=0., norm_eps=PYTORCH.norm_eps):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, dim * 2, bias=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.pool = nn.AvgPool2d(sr_ratio, stride=sr_ratio)
            self.linear = nn.Linear(dim, dim)
            self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x, H, W, relative_pos=None):
        B, L, D = x.shape
        q = self.q(x).reshape(B, L, self.num_heads, self.head_dim).permute(0, 2, 1, 3)
        if self.sr_ratio > 1:
            x = self.pool(x.transpose(1, 2).reshape(B, D, H, W)).reshape(B, D, -1).transpose(1, 2)
            x = self.norm(self.linear(x))
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        if relative_pos is not None:
            attn = attn + relative_pos
        attn = self.attn_drop(F.softmax(attn, dim=-1))
        x = torch.matmul(attn, v).permute(0, 2, 1, 3).reshape(B, L, D)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Optional inner transformer over the words of each sentence (``inner``), its sentences
    added to the outer tokens, then the outer transformer with spatial reduction."""

    def __init__(self, outer_dim, inner_dim, outer_heads, inner_heads, inner=True, sr_ratio=1, proj_drop=0.,
                 attn_drop=0., drop_path=0., gelu=PYTORCH.gelu, norm_eps=PYTORCH.norm_eps):
        super().__init__()
        self.inner = inner
        if inner:
            self.inner_norm1 = nn.LayerNorm(NUM_WORDS * inner_dim, eps=norm_eps)
            self.inner_attn = Attention(inner_dim, inner_heads, 1, attn_drop, proj_drop, norm_eps)
            self.inner_norm2 = nn.LayerNorm(NUM_WORDS * inner_dim, eps=norm_eps)
            self.inner_mlp = Mlp(inner_dim, inner_dim * MLP_RATIO, proj_drop, gelu)
            self.proj_norm1 = nn.LayerNorm(NUM_WORDS * inner_dim, eps=norm_eps)
            self.proj = nn.Linear(NUM_WORDS * inner_dim, outer_dim, bias=False)
            self.proj_norm2 = nn.LayerNorm(outer_dim, eps=norm_eps)
        self.outer_norm1 = nn.LayerNorm(outer_dim, eps=norm_eps)
        self.outer_attn = Attention(outer_dim, outer_heads, sr_ratio, attn_drop, proj_drop, norm_eps)
        self.drop_path = DropPath(drop_path)
        self.outer_norm2 = nn.LayerNorm(outer_dim, eps=norm_eps)
        self.outer_mlp = Mlp(outer_dim, outer_dim * MLP_RATIO, proj_drop, gelu)

    def forward(self, inner_tokens, outer_tokens, H, W, relative_pos):
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


class SentenceAggregation(nn.Module):
    """Outer tokens on an H x W grid -> LayerNorm -> Conv3x3 stride 2 -> the H/2 x W/2 grid."""

    def __init__(self, dim_in, dim_out, norm_eps=PYTORCH.norm_eps):
        super().__init__()
        self.norm = nn.LayerNorm(dim_in, eps=norm_eps)
        self.conv = nn.Sequential(nn.Conv2d(dim_in, dim_out, CONV_KERNEL, stride=MERGE_STRIDE,
                                            padding=CONV_KERNEL // 2))

    def forward(self, x, H, W):
        B, N, D = x.shape
        x = self.conv(self.norm(x).transpose(1, 2).reshape(B, D, H, W))
        return x.reshape(B, x.shape[1], -1).transpose(1, 2)


class WordAggregation(nn.Module):
    """Words of each 2x2 group of sentences tiled into one 8x8 grid (``tile``), LayerNorm
    first, then Conv3x3 stride 2 -> 16 words of ``dim_out`` per merged sentence."""

    def __init__(self, dim_in, dim_out, norm_eps=PYTORCH.norm_eps):
        super().__init__()
        self.dim_out = dim_out
        self.norm = nn.LayerNorm(dim_in, eps=norm_eps)
        self.conv = nn.Sequential(nn.Conv2d(dim_in, dim_out, CONV_KERNEL, stride=MERGE_STRIDE,
                                            padding=CONV_KERNEL // 2))

    def tile(self, x, H, W):
        """(B*H*W, 16, C) words -> (B*H/2*W/2, C, 8, 8): sentence (2i+r, 2j+c) fills rows
        4r..4r+3 and columns 4c..4c+3 of the grid of merged sentence (i, j)."""
        C = x.shape[-1]
        s = WORD_SIDE
        m = MERGE_STRIDE
        x = x.reshape(-1, H // m, m, W // m, m, s, s, C).permute(0, 1, 3, 2, 5, 4, 6, 7)
        return x.reshape(-1, m * s, m * s, C).permute(0, 3, 1, 2)

    def forward(self, x, H, W):
        x = self.conv(self.tile(self.norm(x), H, W))
        return x.reshape(-1, self.dim_out, NUM_WORDS).transpose(1, 2)


class Stem(nn.Module):
    """Image -> inner tokens (B*N, 16, c) and outer tokens (B, N, D), N = (H/8)*(W/8):
    conv-BN-ReLU stacks from a shared stride-2 layer; the inner branch's 4x4 pixel blocks
    are the words of a sentence (row-major), the outer branch reaches 1/8 of the input."""

    def __init__(self, img_size=256, in_chans=3, outer_dim=128, inner_dim=8):
        super().__init__()
        self.inner_dim = inner_dim
        self.grid_size = (grid_sides(img_size)[0],) * 2
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        layers = {branch: [] for branch in STEM_BRANCHES}
        for branch, dim_in, dim_out, stride, _ in stem_layers(in_chans, inner_dim, outer_dim):
            layers[branch] += conv_bn_relu(dim_in, dim_out, stride)
        self.common_conv = nn.Sequential(*layers['common_conv'])
        self.inner_convs = nn.Sequential(*layers['inner_convs'])
        self.outer_convs = nn.Sequential(*layers['outer_convs'])

    def forward(self, x):
        B, _, H, W = x.shape
        gh, gw = self.grid_size
        if H != STEM_STRIDE * gh or W != STEM_STRIDE * gw:
            raise ValueError(f'input is {H}x{W}, the model takes {STEM_STRIDE * gh}x{STEM_STRIDE * gw}')
        x = self.common_conv(x)
        s = WORD_SIDE
        inner_tokens = self.inner_convs(x).reshape(B, self.inner_dim, gh, s, gw, s)
        inner_tokens = inner_tokens.permute(0, 2, 4, 3, 5, 1).reshape(B * gh * gw, NUM_WORDS, self.inner_dim)
        outer_tokens = self.outer_convs(x).permute(0, 2, 3, 1).reshape(B, gh * gw, -1)
        return inner_tokens, outer_tokens


class Stage(nn.Module):
    """Blocks on one grid, sharing the stage's learned ``relative_pos`` (heads, N, N/sr^2)."""

    def __init__(self, num_blocks, outer_dim, inner_dim, outer_heads, inner_heads, num_patches, sr_ratio=1,
                 proj_drop=0., attn_drop=0., drop_path=(), gelu=PYTORCH.gelu, norm_eps=PYTORCH.norm_eps):
        super().__init__()
        self.blocks = nn.ModuleList([
            Block(outer_dim, inner_dim, outer_heads, inner_heads, has_inner(j, num_blocks), sr_ratio, proj_drop,
                  attn_drop, drop_path[j], gelu, norm_eps)
            for j in range(num_blocks)])
        self.relative_pos = nn.Parameter(torch.zeros(1, outer_heads, num_patches, num_patches // sr_ratio ** 2))

    def forward(self, inner_tokens, outer_tokens, H, W):
        for blk in self.blocks:
            inner_tokens, outer_tokens = blk(inner_tokens, outer_tokens, H, W, self.relative_pos)
        return inner_tokens, outer_tokens


class PyramidTNT(nn.Module):
    """PyramidTNT (Han et al. 2022, arXiv 2201.00978): four TNT stages on grids at strides
    8, 16, 32, 64, merged by convolutions; mean-pooled head.

    ``outer_dim``, ``inner_dim``, ``outer_heads`` and ``inner_heads`` are stage 0's; later
    stages scale them by ``STAGE_SCALE``. ``gelu``, ``norm_eps`` and ``final_norm_eps`` are
    the numerics, kept as ``numerics``. ``weight_init='skip'`` leaves out the official init,
    for weights loaded right after.
    """

    def __init__(self, img_size=256, in_chans=3, num_classes=1000, outer_dim=128, inner_dim=8,
                 depths=(2, 8, 4, 2), outer_heads=4, inner_heads=2, drop_rate=0., pos_drop_rate=0.,
                 proj_drop_rate=0., attn_drop_rate=0., drop_path_rate=0., gelu=PYTORCH.gelu,
                 norm_eps=PYTORCH.norm_eps, final_norm_eps=PYTORCH.final_norm_eps, weight_init=''):
        super().__init__()
        self.numerics = Numerics(gelu, norm_eps, final_norm_eps)
        self.num_classes = num_classes
        self.depths = tuple(depths)
        outer_dims, inner_dims = stage_dims(outer_dim), stage_dims(inner_dim)
        outer_heads, inner_heads = stage_dims(outer_heads), stage_dims(inner_heads)
        self.num_features = outer_dims[-1]
        self.grid_sides = grid_sides(img_size)
        self.patch_embed = Stem(img_size, in_chans, outer_dims[0], inner_dims[0])
        num_patches = self.patch_embed.num_patches
        self.outer_pos = nn.Parameter(torch.zeros(1, num_patches, outer_dims[0]))
        self.inner_pos = nn.Parameter(torch.zeros(1, NUM_WORDS, inner_dims[0]))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = drop_path_rates(drop_path_rate, self.depths)
        self.word_merges = nn.ModuleList([WordAggregation(inner_dims[i - 1], inner_dims[i], norm_eps)
                                          for i in range(1, len(self.depths))])
        self.sentence_merges = nn.ModuleList([SentenceAggregation(outer_dims[i - 1], outer_dims[i], norm_eps)
                                              for i in range(1, len(self.depths))])
        self.stages = nn.ModuleList([
            Stage(d, outer_dims[i], inner_dims[i], outer_heads[i], inner_heads[i], self.grid_sides[i] ** 2,
                  SR_RATIOS[i], proj_drop_rate, attn_drop_rate, dpr[i], gelu, norm_eps)
            for i, d in enumerate(self.depths)])
        self.norm = nn.LayerNorm(outer_dims[-1], eps=final_norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(outer_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        initialise(self, weight_init)

    def init_weights(self):
        """The official init: trunc-normal 0.02 on positions and Linear weights, normal
        sqrt(2 / fan_out) on convolutions, standard normal ``relative_pos``."""
        for p in (self.outer_pos, self.inner_pos):
            trunc_normal_(p)
        for stage in self.stages:
            nn.init.normal_(stage.relative_pos)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, std=math.sqrt(2. / fan_out))
                nn.init.zeros_(m.bias)
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
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
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
        x = self.head_drop(x.mean(dim=1))
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def create_model(name, **kwargs):
    """Build PyramidTNT ``name`` (bare or ``architecture.tag``) with that tag's ``pretrained_cfg``;
    ``kwargs`` override (num_classes, drop_path_rate, gelu, ...)."""
    arch, tag = split_tag(name)
    model = PyramidTNT(**dict(model_args(arch), **kwargs))
    model.pretrained_cfg = pretrained_cfg(f'{arch}.{tag}')
    return model
