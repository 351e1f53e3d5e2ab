"""TNT (Transformer in Transformer) in PyTorch, state-dict compatible with timm.

Reads line by line like ``mindspore_tnt/tnt.py``: same classes, attributes and order.
Official layout (timm ``tnt_s_patch16_224``) and timm's legacy TNT-S (``legacy=True``);
GELU form and LayerNorm epsilons are constructor arguments (``tnt_common.numerics``).
"""
import torch
from torch import nn
from torch.nn import functional as F

from tnt_common.architecture import (FIRST_STRIDE, INNER_MLP_RATIO, MLP_RATIO, NO_DECAY_NAMES, PATCH_SIZE, PIXEL_KERNEL,
                                     check_global_pool, drop_path_rates, initialise, patch_grid, word_side)
from tnt_common.numerics import PYTORCH, Numerics
from tnt_common.variants import feature_take_indices, model_args, pretrained_cfg, split_tag


def trunc_normal_(tensor, std=0.02):
    """timm's init for TNT: normal with std 0.02, truncated at +-2 (absolute)."""
    return nn.init.trunc_normal_(tensor, std=std, a=-2., b=2.)


def init_layer(m):
    """timm's init of one layer: trunc-normal 0.02 Linear weights and zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class DropPath(nn.Module):
    """Per-sample stochastic depth: zeroes a sample's residual branch, scales the rest.

    ``noise`` is None by default (the framework's random draw): a callable
    ``noise(shape, dtype)`` returning uniform [0, 1) noise replaces that draw, so that parity
    tests give both frameworks the same masks (``parity.droppath``).
    """

    def __init__(self, drop_prob=0.):
        super().__init__()
        self.drop_prob = drop_prob
        self.noise = None

    def forward(self, x):
        if not self.training or self.drop_prob == 0.:
            return x
        keep_prob = 1. - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        if self.noise is None:
            mask = torch.rand(shape, dtype=x.dtype, device=x.device)
        else:
            mask = self.noise(shape, x.dtype)
        mask = torch.floor(mask + keep_prob)
        return x / keep_prob * mask


class Mlp(nn.Module):
    """fc1 -> GELU (``gelu``: 'erf' exact or 'tanh') -> dropout -> fc2 -> dropout."""

    def __init__(self, in_features, hidden_features, drop=0., gelu=PYTORCH.gelu):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate='tanh' if gelu == 'tanh' else 'none')
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        x = self.drop1(self.fc1_act(x))
        return self.drop2(self.fc2(x))

    def fc1_act(self, x):
        """act(fc1(x))."""
        return self.act(self.fc1(x))


class Attention(nn.Module):
    """Multi-head self-attention with a fused q/k projection and a separate v."""

    def __init__(self, dim, num_heads, attn_drop=0., proj_drop=0.):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qk = nn.Linear(dim, dim * 2, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, L, D = x.shape
        qk = self.qk(x).reshape(B, L, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = qk[0], qk[1]
        v = self.v(x).reshape(B, L, self.num_heads, self.head_dim).permute(0, 2, 1, 3)
        attn = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        attn = self.attn_drop(F.softmax(attn, dim=-1))
        x = torch.matmul(attn, v).permute(0, 2, 1, 3).reshape(B, L, D)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Inner transformer over the words of each sentence, then outer over the sentences."""

    def __init__(self, dim, dim_out, num_pixel, num_heads_in, num_heads_out, mlp_ratio=MLP_RATIO,
                 proj_drop=0., attn_drop=0., drop_path=0., legacy=False, gelu=PYTORCH.gelu,
                 norm_eps=PYTORCH.norm_eps):
        super().__init__()
        self.legacy = legacy
        self.norm_in = nn.LayerNorm(dim, eps=norm_eps)
        self.attn_in = Attention(dim, num_heads_in, attn_drop, proj_drop)
        self.norm_mlp_in = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp_in = Mlp(dim, dim * INNER_MLP_RATIO, proj_drop, gelu)
        if legacy:
            self.norm1_proj = nn.LayerNorm(dim, eps=norm_eps)
            self.proj = nn.Linear(dim * num_pixel, dim_out, bias=True)
        else:
            self.norm1_proj = nn.LayerNorm(dim * num_pixel, eps=norm_eps)
            self.proj = nn.Linear(dim * num_pixel, dim_out, bias=False)
            self.norm2_proj = nn.LayerNorm(dim_out, eps=norm_eps)
        self.norm_out = nn.LayerNorm(dim_out, eps=norm_eps)
        self.attn_out = Attention(dim_out, num_heads_out, attn_drop, proj_drop)
        self.drop_path = DropPath(drop_path)
        self.norm_mlp = nn.LayerNorm(dim_out, eps=norm_eps)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), proj_drop, gelu)

    def forward(self, pixel_embed, patch_embed):
        pixel_embed = pixel_embed + self.drop_path(self.attn_in(self.norm_in(pixel_embed)))
        # The second residual add runs in the view norm1_proj reads, as in mindspore_tnt
        # (where it keeps GRAPH and PYNATIVE gradients identical); elementwise, the same sums.
        B, L, D = patch_embed.shape
        words = pixel_embed.shape
        view = (B, -1, words[-1]) if self.legacy else (B, L - 1, -1)
        sentences = (pixel_embed.reshape(view) +
                     self.drop_path(self.mlp_in(self.norm_mlp_in(pixel_embed))).reshape(view))
        pixel_embed = sentences.reshape(words)
        if self.legacy:
            sentence = self.proj(self.norm1_proj(sentences).reshape(B, L - 1, -1))
        else:
            sentence = self.norm2_proj(self.proj(self.norm1_proj(sentences)))
        patch_embed = torch.cat([patch_embed[:, :1], patch_embed[:, 1:] + sentence], dim=1)
        patch_embed = patch_embed + self.drop_path(self.attn_out(self.norm_out(patch_embed)))
        patch_embed = patch_embed + self.drop_path(self.mlp(self.norm_mlp(patch_embed)))
        return pixel_embed, patch_embed


class PixelEmbed(nn.Module):
    """Image -> sentences (B, N, w*w*C), each the flattened w x w words of one patch: a
    ``PIXEL_KERNEL`` conv of stride ``stride`` per patch of ``patch_size`` pixels (legacy:
    over the whole image) plus ``pixel_pos``; w = ``word_side(patch_size, stride)``."""

    def __init__(self, img_size=224, patch_size=PATCH_SIZE, in_chans=3, in_dim=48, stride=FIRST_STRIDE, legacy=False):
        super().__init__()
        self.legacy = legacy
        self.patch_size = patch_size
        self.grid_size = (patch_grid(img_size, patch_size),) * 2
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_dim = in_dim
        self.new_patch_size = word_side(patch_size, stride)
        self.proj = nn.Conv2d(in_chans, in_dim, kernel_size=PIXEL_KERNEL, padding=PIXEL_KERNEL // 2, stride=stride)

    def forward(self, x, pixel_pos):
        B, C, H, W = x.shape
        gh, gw = self.grid_size
        if H != gh * self.patch_size or W != gw * self.patch_size:
            raise ValueError(f'input is {H}x{W}, the model takes {gh * self.patch_size}x{gw * self.patch_size}')
        if self.legacy:
            x = self.proj(x)
            p = self.new_patch_size
        else:
            p = self.patch_size
        x = x.reshape(B, -1, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(B * gh * gw, -1, p, p)
        if not self.legacy:
            x = self.proj(x)
        return self.to_sentences(x.reshape(B * self.num_patches, self.in_dim, -1).transpose(1, 2), pixel_pos)

    def to_sentences(self, words, pixel_pos):
        """Words (B*N, w*w, C) plus ``pixel_pos``, as sentences (B, N, w*w*C)."""
        pos = pixel_pos.reshape(1, self.in_dim, -1).transpose(1, 2).reshape(1, 1, -1)
        return words.reshape(-1, self.num_patches, pos.shape[-1]) + pos


class TNT(nn.Module):
    """Transformer in Transformer (Han et al., NeurIPS 2021).

    ``gelu`` ('erf' or 'tanh'), ``norm_eps`` (every LayerNorm but the final one) and
    ``final_norm_eps`` (the final ``norm``) are the model's numerics, kept as ``numerics``.
    ``weight_init='skip'`` leaves out timm's init, for weights loaded right after.
    """

    def __init__(self, img_size=224, patch_size=PATCH_SIZE, in_chans=3, num_classes=1000,
                 global_pool='token', embed_dim=768, inner_dim=48, depth=12,
                 num_heads_inner=4, num_heads_outer=12, mlp_ratio=MLP_RATIO, drop_rate=0.,
                 pos_drop_rate=0., proj_drop_rate=0., attn_drop_rate=0., drop_path_rate=0.,
                 first_stride=FIRST_STRIDE, legacy=False, gelu=PYTORCH.gelu, norm_eps=PYTORCH.norm_eps,
                 final_norm_eps=PYTORCH.final_norm_eps, weight_init=''):
        super().__init__()
        check_global_pool(global_pool)
        self.numerics = Numerics(gelu, norm_eps, final_norm_eps)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.embed_dim = embed_dim
        self.pixel_embed = PixelEmbed(img_size, patch_size, in_chans, inner_dim, first_stride, legacy)
        num_patches = self.pixel_embed.num_patches
        self.num_patches = num_patches
        new_patch_size = self.pixel_embed.new_patch_size
        num_pixel = new_patch_size ** 2
        self.norm1_proj = nn.LayerNorm(num_pixel * inner_dim, eps=norm_eps)
        self.proj = nn.Linear(num_pixel * inner_dim, embed_dim)
        self.norm2_proj = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.patch_pos = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.pixel_pos = nn.Parameter(torch.zeros(1, inner_dim, new_patch_size, new_patch_size))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList([
            Block(inner_dim, embed_dim, num_pixel, num_heads_inner, num_heads_outer, mlp_ratio,
                  proj_drop_rate, attn_drop_rate, dpr[i], legacy, gelu, norm_eps)
            for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=final_norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        initialise(self, weight_init)

    def init_weights(self):
        """timm's init: trunc-normal 0.02 on tokens, positions and Linear weights."""
        for p in (self.cls_token, self.patch_pos, self.pixel_pos):
            trunc_normal_(p)
        for m in self.modules():
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
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        init_layer(self.head)

    def embed(self, x):
        """Image -> (inner tokens (B*N, w*w, C), outer tokens (B, N+1, D))."""
        B = x.shape[0]
        sentences = self.pixel_embed(x, self.pixel_pos)
        pixel_embed = sentences.reshape(B * self.num_patches, -1, self.pixel_embed.in_dim)
        patch_embed = self.norm2_proj(self.proj(self.norm1_proj(sentences)))
        patch_embed = torch.cat([self.cls_token.expand(B, -1, -1), patch_embed], dim=1)
        patch_embed = self.pos_drop(patch_embed + self.patch_pos)
        return pixel_embed, patch_embed

    def forward_stages(self, x):
        """Final normed outer tokens and ((inner, outer) after the embedding and each block)."""
        pixel_embed, patch_embed = self.embed(x)
        stages = ((pixel_embed, patch_embed),)
        for blk in self.blocks:
            pixel_embed, patch_embed = blk(pixel_embed, patch_embed)
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
        """
        if output_fmt not in ('NCHW', 'NLC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.blocks), indices)
        B = x.shape[0]
        gh, gw = self.pixel_embed.grid_size
        pixel_embed, patch_embed = self.embed(x)
        intermediates = []
        for i in range(max_index + 1 if stop_early else len(self.blocks)):
            pixel_embed, patch_embed = self.blocks[i](pixel_embed, patch_embed)
            if i in take:
                intermediates.append(self.norm(patch_embed) if norm else patch_embed)
        prefix_tokens = [y[:, :1] for y in intermediates]
        intermediates = [y[:, 1:] for y in intermediates]
        if output_fmt == 'NCHW':
            intermediates = [y.reshape(B, gh, gw, -1).permute(0, 3, 1, 2) for y in intermediates]
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
            pixel_embed, patch_embed = blk(pixel_embed, patch_embed)
        return self.norm(patch_embed)

    def forward_head(self, x, pre_logits=False):
        if self.global_pool == 'avg':
            x = x[:, 1:].mean(dim=1)
        elif self.global_pool == 'token':
            x = x[:, 0]
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def create_model(name, **kwargs):
    """Build ``name``: a variant, bare or tagged as timm (``tnt_s_patch16_224.in1k``, see
    ``tnt_common.variants.PRETRAINED_CFGS``), with that tag's ``pretrained_cfg``; ``kwargs``
    override (num_classes, img_size, drop_path_rate, gelu, ...).
    """
    arch, tag = split_tag(name)
    model = TNT(**dict(model_args(arch), **kwargs))
    model.pretrained_cfg = pretrained_cfg(f'{arch}.{tag}')
    return model
