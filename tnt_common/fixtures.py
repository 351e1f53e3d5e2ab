"""Deterministic inputs and weights for comparisons: a batch of images, random TNT weights.

Numpy only. Random weights are at the activation scale of a trained network: timm's init
(std 0.02, LayerNorm 1/0, zero biases) keeps activations tiny and every norm and bias
identical, which would hide a swapped LayerNorm, a lost bias or a tanh GELU. Here every
tensor is distinct and variance-preserving, so such faults show.
"""
import math

import numpy as np


def make_batch(batch, img_size, seed=0):
    """A deterministic batch in the model's input range (mean = std = 0.5 normalisation)."""
    rng = np.random.default_rng(seed)
    return ((rng.random((batch, 3, img_size, img_size)) - 0.5) / 0.5).astype(np.float32)


def random_timm_weights(shapes, seed=0):
    """``{timm_name: array}`` for the given ``{timm_name: shape}``."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        module, leaf = name.rsplit('.', 1) if '.' in name else ('', name)
        is_norm = module.rsplit('.', 1)[-1].startswith('norm')
        if is_norm and leaf == 'weight':
            a = 1. + 0.1 * rng.standard_normal(shape)
        elif leaf == 'bias':
            a = 0.1 * rng.standard_normal(shape)
        elif leaf == 'weight':
            fan_in = math.prod(shape[1:])
            a = rng.standard_normal(shape) / math.sqrt(fan_in)
        else:  # cls_token, patch_pos, pixel_pos
            a = 0.1 * rng.standard_normal(shape)
        out[name] = a.astype(np.float32)
    return out


def random_pyramid_weights(shapes, seed=0):
    """``{official_name: array}`` of a PyramidTNT for the given ``{name: shape}``, as
    ``random_timm_weights`` and with the stem's BatchNorms non-trivial: affine near 1 / 0,
    running means around 0, running variances in [0.5, 2) (``num_batches_tracked`` 0), and
    each stage's ``relative_pos`` standard normal as the official init draws it."""
    rng = np.random.default_rng(seed + 1)
    out = random_timm_weights({k: s for k, s in shapes.items() if not k.endswith('num_batches_tracked')}, seed)
    for name, shape in shapes.items():
        leaf = name.rsplit('.', 1)[-1]
        if leaf == 'num_batches_tracked':
            out[name] = np.zeros(shape, np.int64)
        elif name.startswith('patch_embed.') and len(shape) == 1:   # a BatchNorm's vector (conv biases stay)
            if leaf == 'weight':
                out[name] = (1. + 0.1 * rng.standard_normal(shape)).astype(np.float32)
            elif leaf == 'running_mean':
                out[name] = (0.5 * rng.standard_normal(shape)).astype(np.float32)
            elif leaf == 'running_var':
                out[name] = rng.uniform(0.5, 2., shape).astype(np.float32)
        elif leaf == 'relative_pos':
            out[name] = rng.standard_normal(shape).astype(np.float32)
    return out
