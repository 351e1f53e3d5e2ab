"""timm-style RandAugment and pixel-mode random erasing, driven by a per-sample seed.

``mindspore.dataset.vision.RandAugment`` is torchvision's RandAugment: its magnitude is a
bin index (9 of 31 bins is about a third of the range timm's ``m9`` means), it has no
magnitude noise, always applies both ops, has no Invert/SolarizeAdd, fills with 0 and
uses one interpolation. The recipe's ``rand-m9-mstd0.5-inc1`` differs on each point, so
``RandAugment`` here implements the timm policy on top of MindSpore's own image ops
(``vision.Rotate``, ``Affine``, ``Posterize``, ``Solarize``, ``Adjust*``, ...).

MindSpore's ``RandomErasing`` draws from Python's global RNG (not reproducible across
pipeline worker threads) and samples the aspect ratio uniformly; ``RandomErasing`` here
follows timm's pixel mode (log-uniform aspect ratio, N(0, 1) noise per pixel and channel).

Both take their randomness from a seed that travels with the sample: the same image and
seed give the same result in any worker thread, after a resume too.
"""
import math

import numpy as np
from mindspore.dataset import vision

from tnt_common.recipe import RECIPE

MAX_LEVEL = 10.
_TRANSLATE_PCT = 0.45
_FILL = (128, 128, 128)  # mean 0.5 as a pixel value
_INTERPOLATIONS = (vision.Inter.BILINEAR, vision.Inter.BICUBIC)


def _signed(rng, value):
    return -value if rng.random() < 0.5 else value


def _enhance_factor(increasing):
    """Colour/contrast/brightness/sharpness factor for a level."""
    if increasing:
        return lambda level, rng: 1. + _signed(rng, level / MAX_LEVEL * 0.9)
    return lambda level, rng: level / MAX_LEVEL * 1.8 + 0.1


def _ops(increasing):
    """name -> fn(img, level, rng) of the policy (timm's ``_RAND_TRANSFORMS`` / ``_INCREASING``)."""
    enhance = _enhance_factor(increasing)

    def geometric(img, rng, degrees=0., translate=(0., 0.), shear=(0., 0.)):
        interp = _INTERPOLATIONS[rng.integers(2)]
        return vision.Affine(degrees, list(translate), 1., list(shear), interp, _FILL)(img)

    def rotate(img, level, rng):
        interp = _INTERPOLATIONS[rng.integers(2)]
        return vision.Rotate(_signed(rng, level / MAX_LEVEL * 30.), interp, fill_value=_FILL)(img)

    def shear(axis):
        def op(img, level, rng):
            angle = math.degrees(math.atan(_signed(rng, level / MAX_LEVEL * 0.3)))
            return geometric(img, rng, shear=(angle, 0.) if axis == 0 else (0., angle))
        return op

    def translate(axis):
        def op(img, level, rng):
            pct = _signed(rng, level / MAX_LEVEL * _TRANSLATE_PCT)
            return geometric(img, rng, translate=(pct, 0.) if axis == 0 else (0., pct))
        return op

    def posterize(img, level, rng):
        bits = int(level / MAX_LEVEL * 4)
        bits = 4 - bits if increasing else bits + 4
        return img if bits >= 8 else vision.Posterize(bits)(img)

    def solarize(img, level, rng):
        threshold = int(level / MAX_LEVEL * 256)
        threshold = 256 - threshold if increasing else threshold
        if threshold >= 256:
            return img
        return vision.Solarize(float(threshold))(img)

    def solarize_add(img, level, rng):
        add = int(level / MAX_LEVEL * 110)
        return np.where(img < 128, np.minimum(img.astype(np.int32) + add, 255), img).astype(np.uint8)

    return {
        'AutoContrast': lambda img, level, rng: vision.AutoContrast()(img),
        'Equalize': lambda img, level, rng: vision.Equalize()(img),
        'Invert': lambda img, level, rng: vision.Invert()(img),
        'Rotate': rotate,
        'Posterize': posterize,
        'Solarize': solarize,
        'SolarizeAdd': solarize_add,
        'Color': lambda img, level, rng: vision.AdjustSaturation(enhance(level, rng))(img),
        'Contrast': lambda img, level, rng: vision.AdjustContrast(enhance(level, rng))(img),
        'Brightness': lambda img, level, rng: vision.AdjustBrightness(enhance(level, rng))(img),
        'Sharpness': lambda img, level, rng: vision.AdjustSharpness(enhance(level, rng))(img),
        'ShearX': shear(0),
        'ShearY': shear(1),
        'TranslateXRel': translate(0),
        'TranslateYRel': translate(1),
    }


def parse_rand_augment(config):
    """``'rand-m9-mstd0.5-inc1'`` -> dict(magnitude=9., num_ops=2, magnitude_std=0.5, increasing=True, prob=0.5)."""
    parts = config.split('-')
    if parts[0] != 'rand':
        raise ValueError(f'RandAugment config must start with "rand": {config!r}')
    out = dict(magnitude=9., num_ops=2, magnitude_std=0., magnitude_max=MAX_LEVEL, increasing=False, prob=0.5)
    keys = {'m': 'magnitude', 'n': 'num_ops', 'mstd': 'magnitude_std', 'mmax': 'magnitude_max',
            'inc': 'increasing', 'p': 'prob'}
    for part in parts[1:]:
        key = part.rstrip('0123456789.')
        if key not in keys or key == part:
            raise ValueError(f'unknown RandAugment option {part!r} in {config!r}; '
                             f'known: {", ".join(keys)} followed by a number')
        value = float(part[len(key):])
        out[keys[key]] = bool(value) if key == 'inc' else int(value) if key == 'n' else value
    return out


class RandAugment:
    """timm's RandAugment policy on uint8 HWC images; ``__call__(image, seed) -> (image, seed)``."""

    def __init__(self, config=RECIPE['rand_augment']):
        cfg = parse_rand_augment(config)
        self.config = config
        self.num_ops = cfg['num_ops']
        self.magnitude = cfg['magnitude']
        self.magnitude_std = cfg['magnitude_std']
        self.magnitude_max = cfg['magnitude_max']
        self.prob = cfg['prob']
        self.ops = _ops(cfg['increasing'])
        self.names = sorted(self.ops)

    def level(self, rng):
        m = self.magnitude
        if self.magnitude_std == float('inf'):
            m = rng.uniform(0, m)
        elif self.magnitude_std > 0:
            m = rng.normal(m, self.magnitude_std)
        return float(min(max(m, 0.), self.magnitude_max))

    def apply(self, image, rng):
        for i in rng.integers(len(self.names), size=self.num_ops):  # with replacement
            if rng.random() < self.prob:
                image = self.ops[self.names[i]](image, self.level(rng), rng)
        return image

    def __call__(self, image, seed):
        return self.apply(image, np.random.default_rng([int(seed), 0])), seed


class RandomErasing:
    """timm's pixel-mode random erasing of one box on normalised CHW images; ``__call__(image, seed)``."""

    def __init__(self, prob=RECIPE['reprob'], scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3), attempts=10):
        self.prob = prob
        self.scale = scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.attempts = attempts

    def apply(self, image, rng):
        if rng.random() >= self.prob:
            return image
        c, h, w = image.shape
        for _ in range(self.attempts):
            area = rng.uniform(*self.scale) * h * w
            aspect = math.exp(rng.uniform(*self.log_ratio))
            eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if eh < h and ew < w:
                top, left = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
                image = image.copy()
                image[:, top:top + eh, left:left + ew] = rng.standard_normal((c, eh, ew)).astype(image.dtype)
                break
        return image

    def __call__(self, image, seed):
        return self.apply(image, np.random.default_rng([int(seed), 1])), seed
