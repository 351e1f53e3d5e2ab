"""Facts of the TNT architecture that hold for every variant, as in timm's TNT.

Framework-free; both models, the converters' layouts and the training recipe read them
here. What differs between variants (``patch_size``, ``first_stride``, ``mlp_ratio``,
dims) is in ``tnt_common.variants.VARIANTS``; the word grid follows from the geometry.
"""
import math

# The geometry of timm's TNT class defaults (and of every registered variant): patches of
# PATCH_SIZE x PATCH_SIZE pixels, the pixel embedding at stride FIRST_STRIDE (4 x 4 words a
# patch, ``word_side``), the outer MLP MLP_RATIO times the embedding wide.
PATCH_SIZE = 16
FIRST_STRIDE = 4
MLP_RATIO = 4.

# Side of the pixel embedding's square convolution kernel, zero-padded by half of it.
PIXEL_KERNEL = 7

# Hidden width of the inner MLP per inner dim: fixed, not ``mlp_ratio`` (the outer MLP's).
INNER_MLP_RATIO = 4

# Parameters kept out of weight decay besides biases and 1-D tensors (``no_weight_decay``).
NO_DECAY_NAMES = frozenset({'cls_token', 'patch_pos', 'pixel_pos'})


def word_side(patch_size, first_stride):
    """Words along each side of a patch: ceil(patch_size / first_stride), the outputs per
    patch of the pixel embedding's stride-``first_stride`` convolution."""
    return math.ceil(patch_size / first_stride)


def patch_grid(img_size, patch_size):
    """Patches along each side of an ``img_size`` input; ValueError unless ``img_size`` is a
    positive multiple of ``patch_size`` (the pixel embedding takes whole patches only)."""
    if img_size < patch_size or img_size % patch_size:
        raise ValueError(f'img_size {img_size} is not a positive multiple of the patch size {patch_size}')
    return img_size // patch_size


def check_global_pool(global_pool):
    """Raise ValueError unless ``global_pool`` is one the head takes: 'token', 'avg' or ''."""
    if global_pool not in ('', 'token', 'avg'):
        raise ValueError(f"global_pool {global_pool!r}: 'token' (the class token), 'avg' (the patch tokens' "
                         f"mean) or '' (none)")


def drop_path_rates(rate, depth):
    """Drop-path probability of each of ``depth`` blocks: linear from 0 to ``rate``."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


def initialise(model, weight_init):
    """Give ``model`` its init (``model.init_weights()``: timm's, or the official PyramidTNT one)
    unless ``weight_init`` is 'skip', which keeps the layers' framework defaults for weights
    loaded right after (timm's option of that name)."""
    if weight_init not in ('', 'skip'):
        raise ValueError(f"weight_init {weight_init!r}: '' (the model's init) or 'skip'")
    if weight_init != 'skip':
        model.init_weights()
