"""Facts of the PyramidTNT architecture (Han et al. 2022) that hold for every variant.

Framework-free; ``torch_ref.ptnt`` and ``mindspore_tnt.ptnt`` read them here. What differs
between variants (base dims and heads, depths, input size) is in
``tnt_common.variants.PYRAMID_VARIANTS``.
"""
from tnt_common import architecture

# Four stages; dims and heads of stage i are the variant's base values times STAGE_SCALE[i].
STAGE_SCALE = (1, 2, 4, 4)

# Spatial reduction of the outer attention's keys and values per stage (AvgPool side).
SR_RATIOS = (4, 2, 1, 1)

# The stem's outer tokens sit at 1/8 of the input; each stage halves the grid after the first.
STEM_STRIDE = 8

# Words per sentence: a 4x4 grid at every stage (word merges keep it, doubling the inner dim).
WORD_SIDE = 4
NUM_WORDS = WORD_SIDE * WORD_SIDE

# Hidden width of both MLPs per dim.
MLP_RATIO = 4

# Parameters kept out of weight decay besides biases and 1-D tensors.
NO_DECAY_NAMES = frozenset({'outer_pos', 'inner_pos'})

# Stem convolutions are 3x3, zero-padded by 1; merges are 3x3 stride 2 padded by 1.
CONV_KERNEL = 3
MERGE_STRIDE = 2

# The stem's BatchNorms: epsilon, and momentum in torch's convention (MindSpore's is 1 minus it).
BN_EPS = 1e-5
BN_MOMENTUM = 0.1

# The stem's branches, in the order their parameters come.
STEM_BRANCHES = ('common_conv', 'inner_convs', 'outer_convs')


def stem_layers(in_chans, inner_dim, outer_dim):
    """The stem's conv-BN-ReLU layers in order, each (branch, input width, output width, stride,
    input side divisor: the image's side over its input's): a shared stride-2 layer, then the
    inner branch to ``inner_dim`` at 1/2 of the image (its 4x4 pixel blocks are the words) and
    the outer branch to ``outer_dim`` at 1/``STEM_STRIDE``."""
    c = inner_dim
    return (('common_conv', in_chans, 2 * c, 2, 1),
            ('inner_convs', 2 * c, c, 1, 2),
            ('outer_convs', 2 * c, 4 * c, 2, 2),
            ('outer_convs', 4 * c, 8 * c, 2, 4),
            ('outer_convs', 8 * c, outer_dim, 1, STEM_STRIDE))


def stage_dims(base):
    """``base`` (a dim or a head count) at each of the four stages."""
    return tuple(base * s for s in STAGE_SCALE)


def has_inner(block, num_blocks):
    """Whether block ``block`` of a stage of ``num_blocks`` has the inner transformer: the
    first block always, the second where the stage has more than 6 blocks."""
    return block == 0 or (block == 1 and num_blocks > 6)


def grid_sides(img_size):
    """Side of the outer token grid at each stage for a square ``img_size`` input.

    Raises ValueError where a merge would meet an odd grid (the official code pads there,
    for detection inputs; these models take classification sizes only).
    """
    if img_size % STEM_STRIDE:
        raise ValueError(f'input size {img_size} is not a multiple of {STEM_STRIDE}')
    sides = [img_size // STEM_STRIDE]
    for _ in STAGE_SCALE[1:]:
        if sides[-1] % MERGE_STRIDE:
            raise ValueError(f'input size {img_size}: the grid {sides[-1]}x{sides[-1]} cannot merge 2x2')
        sides.append(sides[-1] // MERGE_STRIDE)
    return tuple(sides)


def drop_path_rates(rate, depths):
    """Drop-path probability of every block of every stage, as lists per stage: linear from
    0 to ``rate`` over all ``sum(depths)`` blocks."""
    flat = architecture.drop_path_rates(rate, sum(depths))
    out, start = [], 0
    for d in depths:
        out.append(flat[start:start + d])
        start += d
    return out


def stage_names(depths):
    """Names of the entries of ``forward_stages``: the stem, every block, every merge, in order."""
    names = ['stem']
    for i, d in enumerate(depths):
        if i:
            names.append(f'merge {i}')
        names += [f'stage {i} block {j}' for j in range(d)]
    return names
