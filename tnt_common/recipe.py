"""The official TNT ImageNet-1k training recipe and its framework-free helpers.

Values as docs/training.md, "The ImageNet recipe", gives them: the TNT paper's recipe,
trained with the DeiT/timm training script, whose defaults fill the gaps (``min_lr`` and
the Adam betas), and, for the MindSpore-specific parts (loss scale, gradient clip), the
MindSpore model zoo's 8x Ascend 910 run. Importable without torch or mindspore.
"""
import math

from tnt_common import pyramid
from tnt_common.architecture import NO_DECAY_NAMES

RECIPE = dict(
    epochs=300,
    global_batch=1024,
    lr=1e-3,                  # at global batch ``lr_base_batch``, scaled linearly
    lr_base_batch=1024,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.05,
    warmup_epochs=5,
    warmup_lr=1e-6,
    min_lr=1e-5,
    smoothing=0.1,
    mixup=0.8,
    cutmix=1.0,
    mixup_switch_prob=0.5,
    rand_augment='rand-m9-mstd0.5-inc1',
    reprob=0.25,
    remode='pixel',
    repeated_aug=3,           # copies of each image per epoch (DeiT's RASampler)
    drop_path=0.1,
    ema_decay=0.99996,
    amp=True,
    clip_grad=5.0,
    loss_scale=2. ** 24,
    loss_scale_window=2000,
    loss_scale_factor=2.,
)

# PyramidTNT (official README's ImageNet command): TNT's recipe with 20 warm-up epochs.
PYRAMID_RECIPE = dict(RECIPE, warmup_epochs=20)


def recipe(family='tnt'):
    """The recipe of a model family: 'tnt' (``RECIPE``) or 'ptnt' (``PYRAMID_RECIPE``)."""
    return PYRAMID_RECIPE if family == 'ptnt' else RECIPE


def applies_weight_decay(name, shape):
    """True if parameter ``name`` of ``shape`` is decayed.

    No decay on biases, on 1-D tensors (LayerNorm ``weight``/``bias`` or
    ``gamma``/``beta``) and on the class token and position embeddings (TNT's and
    PyramidTNT's ``outer_pos``/``inner_pos``). Works on timm and mindspore_tnt names, with or
    without wrapper prefixes.
    """
    leaf = name.rsplit('.', 1)[-1]
    return (len(tuple(shape)) > 1 and leaf not in NO_DECAY_NAMES | pyramid.NO_DECAY_NAMES
            and leaf not in ('bias', 'beta'))


def lr_schedule(base_lr, total_steps, warmup_steps, warmup_lr=RECIPE['warmup_lr'],
                min_lr=RECIPE['min_lr']):
    """Per-step learning rates: linear warm-up from ``warmup_lr``, then cosine to ``min_lr``.

    Entry ``s`` is the LR of optimizer step ``s`` (0-based); the warm-up reaches
    ``base_lr`` at step ``warmup_steps`` and the cosine ends at ``min_lr`` after the last step.
    """
    if total_steps <= 0:
        raise ValueError(f'total_steps must be positive, got {total_steps}')
    warmup_steps = min(max(int(warmup_steps), 0), total_steps)
    lrs = []
    for s in range(total_steps):
        if s < warmup_steps:
            lrs.append(warmup_lr + (base_lr - warmup_lr) * s / warmup_steps)
        else:
            t = (s - warmup_steps) / max(total_steps - warmup_steps, 1)
            lrs.append(min_lr + 0.5 * (base_lr - min_lr) * (1. + math.cos(math.pi * t)))
    return lrs
