"""ImageNet-style image folders through ``mindspore.dataset`` with the recipe's transforms.

Train: RandomResizedCrop (bicubic) -> flip -> RandAugment -> normalise -> random erasing
-> batch -> one-hot with label smoothing -> Mixup or CutMix (CutMix with ``mixup_switch_prob``).
Eval: resize to ``img_size / crop_pct`` (bicubic) -> centre crop -> normalise.
Each epoch's pipeline is seeded from (seed, epoch), so for a given worker count (MindSpore's
C++ random transforms draw per worker) the data order and every random augmentation are
reproducible: a resumed run rebuilds the epoch and skips what it has seen.
"""
import contextlib
import glob
import itertools
import os
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from tnt_common.files import atomic_output
from tnt_common.recipe import RECIPE
from tnt_common.variants import CROP_PCT, IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from tnt_train.errors import InputError

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff')   # what MindSpore's Decode reads
# every spelling of them (.Jpg as .JPG): ImageFolderDataset matches suffixes case-sensitively
_SPELLINGS = sorted({''.join(c) for e in IMG_EXTENSIONS for c in itertools.product(*((ch, ch.upper()) for ch in e))})


@contextlib.contextmanager
def reading_images(failed='reading the images failed'):
    """A failure of MindSpore's data pipeline inside the block (an image it cannot decode) as one
    ``InputError`` line, ``failed: reason``; the copy of that image MindSpore's Decode writes into
    the working directory (``abnormal_image.*``) is removed, unless a file of that name was there before."""
    before = set(glob.glob('abnormal_image.*'))
    try:
        yield
    except RuntimeError as e:
        if 'Dataset Pipeline Error Message' not in str(e):
            raise
        for path in set(glob.glob('abnormal_image.*')) - before:
            with contextlib.suppress(OSError):
                os.remove(path)
        damaged = re.search(r'ValueError: (damaged JPEG: .*?)\n', str(e))
        if damaged:     # check_decodable's, with the file's name if MindSpore gives it
            named = re.search(r'The corresponding data file is: (.*?)\. Error description:', str(e))
            raise InputError(f'{failed}: {named[1] + " is a " if named else "a "}{damaged[1]}') from None
        lines = [line.strip() for line in str(e).splitlines() if line.strip().startswith('[ERROR]')]
        line = (lines[0][len('[ERROR]'):] if lines else str(e).splitlines()[0]).split(' Dump the abnormal image')[0]
        raise InputError(f'{failed}: {line.strip()}') from None


def _images_in(folder):
    return [f for f in os.listdir(folder) if f.lower().endswith(IMG_EXTENSIONS)]


def require_folder(path):
    """``InputError`` unless ``path`` is a folder."""
    if not os.path.isdir(path):
        raise InputError(f'data folder {path} ' + ('is not a folder' if os.path.exists(path) else 'does not exist'))


def image_folder_classes(split_dir):
    """Sorted class names of an image folder split; ``InputError`` if missing or empty."""
    require_folder(split_dir)
    classes = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
    if not classes:
        raise InputError(f'data folder {split_dir} has no class sub-folders')
    empty = [c for c in classes if not _images_in(os.path.join(split_dir, c))]
    if len(empty) == len(classes):
        raise InputError(f'data folder {split_dir} holds no images ({", ".join(IMG_EXTENSIONS)})')
    if empty:
        raise InputError(f'data folder {split_dir}: class folders without images: {", ".join(empty[:5])}')
    return classes


def check_dataset(root, need_train=True):
    """Class names of ``root/train`` and ``root/val`` (which must agree)."""
    require_folder(root)
    val = image_folder_classes(os.path.join(root, 'val'))
    if need_train:
        train = image_folder_classes(os.path.join(root, 'train'))
        if train != val:
            raise InputError(f'{root}: train has {len(train)} classes, val has {len(val)}; they must match')
    return val


def default_data_dir():
    cache = os.environ.get('XDG_CACHE_HOME', os.path.join(os.path.expanduser('~'), '.cache'))
    return os.path.join(cache, 'tnt_train', 'sklearn_digits')


def export_digits(root=None, size=32, val_fraction=0.2, seed=0):
    """Write scikit-learn's handwritten digits (1797 8x8 images, 10 classes) as ``root/{train,val}/<digit>/``.

    Done once: an existing folder is reused. Images are upscaled bicubically to ``size``
    and stored as RGB PNGs; the split is stratified and fixed by ``seed``.
    """
    root = root or default_data_dir()
    if os.path.isdir(os.path.join(root, 'val')):
        return root
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    index = np.arange(len(digits.target))
    train_idx, val_idx = train_test_split(index, test_size=val_fraction, stratify=digits.target,
                                          random_state=seed)
    os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
    try:
        with atomic_output(root, directory=True) as tmp:
            for split, idx in (('train', train_idx), ('val', val_idx)):
                for i in idx:
                    folder = os.path.join(tmp, split, str(digits.target[i]))
                    os.makedirs(folder, exist_ok=True)
                    pixels = (digits.images[i] * (255. / 16.)).round().astype(np.uint8)
                    img = Image.fromarray(pixels).resize((size, size), Image.BICUBIC).convert('RGB')
                    img.save(os.path.join(folder, f'{i:04d}.png'))
    except OSError:
        if not os.path.isdir(os.path.join(root, 'val')):  # not a concurrent writer's success
            raise
    return root


@dataclass(frozen=True)
class TrainTransform:
    """The training augmentation's settings (defaults: the recipe, docs/training.md).

    ``augment=False`` trains on the eval transform (no random crop, flip, RandAugment,
    erasing or mixing; label smoothing still applies): every sample is deterministic.
    """
    img_size: int = 224
    augment: bool = True
    crop_pct: float = CROP_PCT
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    hflip: float = 0.5
    rand_augment: str = RECIPE['rand_augment']   # '' for none
    reprob: float = RECIPE['reprob']
    mixup: float = RECIPE['mixup']
    cutmix: float = RECIPE['cutmix']
    mixup_switch_prob: float = RECIPE['mixup_switch_prob']     # with both on: the probability a batch takes CutMix
    smoothing: float = RECIPE['smoothing']
    mean: tuple = IMAGENET_INCEPTION_MEAN
    std: tuple = IMAGENET_INCEPTION_STD


# JPEG markers: SOF0-SOF15 but DHT (C4), JPG (C8) and DAC (CC); SOS; those without a length
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOS = 0xDA
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


def jpeg_damage(data):
    """Why the JPEG ``data`` (bytes or uint8 array) cannot be decoded safely, or None (also for
    other formats). MindSpore's Decode dies of SIGFPE on a JPEG that ends before its scan begins,
    rather than raising; this walks the marker segments up to the scan's header."""
    data = bytes(data)
    if not data.startswith(b'\xff\xd8'):
        return None
    i, frame = 2, None
    while i + 4 <= len(data):
        marker = data[i + 1]
        if data[i] != 0xFF or marker == 0xFF:   # stray bytes (libjpeg skips them, with a warning), fill bytes
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], 'big')
        if end > len(data):
            break
        if marker in _SOF:
            frame = data[i + 5:i + 9]
            if int.from_bytes(frame[:2], 'big') == 0 or int.from_bytes(frame[2:], 'big') == 0:
                return 'its frame header gives a size of 0'
        if marker == _SOS:
            return None if frame is not None else 'it has no frame header before its scan'
        i = end
    return 'it ends before its image data'


def check_decodable(image):
    """The pipelines' first map: ``image`` (a file's bytes) unchanged; ``ValueError`` if ``jpeg_damage``
    finds it damaged (``reading_images`` reports it)."""
    why = jpeg_damage(image)
    if why:
        raise ValueError(f'damaged JPEG: {why}')
    return image


def _normalize(mean, std):
    from mindspore.dataset import vision
    return [vision.Normalize([255. * m for m in mean], [255. * s for s in std]), vision.HWC2CHW()]


def _eval_ops(img_size, crop_pct, mean, std):
    from mindspore.dataset import vision
    return [vision.Decode(), vision.Resize(int(img_size / crop_pct), vision.Inter.BICUBIC),
            vision.CenterCrop(img_size)] + _normalize(mean, std)


def _folder(root, split, classes, shuffle, rank, world, indices=None):
    """An image folder split, sharded over ranks (or exactly the rows ``indices``, in order)."""
    import mindspore.dataset as ds
    sharding = dict(shuffle=shuffle, num_shards=world, shard_id=rank) if indices is None else \
        dict(sampler=ds.SubsetSampler([int(i) for i in indices]))
    data = ds.ImageFolderDataset(os.path.join(root, split), class_indexing={c: i for i, c in enumerate(classes)},
                                 extensions=_SPELLINGS, **sharding)
    return data.map(check_decodable, 'image')   # a map of its own: Decode's errors still name the file


def repeated_aug_indices(n, repeats, seed, epoch, rank=0, world=1):
    """This rank's rows for an epoch with repeated augmentation (DeiT's ``RASampler``).

    A seeded permutation of the ``n`` rows, each repeated ``repeats`` times in a row, padded
    to a multiple of ``world`` and dealt round-robin to the ranks, so the copies of an image
    land on different ranks (or, on one device, side by side in a batch) with different
    augmentations. An epoch keeps its length: ``n`` rounded down to a multiple of 256 (or
    ``n`` if smaller), split over the ranks.
    """
    order = np.repeat(np.random.default_rng([int(seed), int(epoch)]).permutation(n), repeats)
    total = -(-len(order) // world) * world
    order = np.concatenate([order, order[:total - len(order)]])
    return order[rank::world][:(n // 256 * 256 or n) // world]


def samples_per_rank(root, split, classes, rank=0, world=1, repeats=0):
    """Images of ``root/split`` this rank reads per epoch (shards are padded to equal size)."""
    if repeats > 1:
        n = _folder(root, split, classes, False, 0, 1).get_dataset_size()
        return len(repeated_aug_indices(n, repeats, 0, 0, rank, world))
    return _folder(root, split, classes, False, rank, world).get_dataset_size()


def _set_prefetch(prefetch):
    import mindspore.dataset as ds
    if prefetch:
        ds.config.set_prefetch_size(prefetch)


def workers_here(workers):
    """``workers``, at most this machine's CPU count (MindSpore's limit for a pipeline)."""
    return max(1, min(int(workers), os.cpu_count() or 1))


def _augment(data, tf, workers):
    """Per-sample random augmentation of ``(image, aug_seed)`` rows."""
    from mindspore.dataset import vision
    from tnt_train.augment import RandAugment, RandomErasing
    geometric = [vision.Decode(), vision.RandomResizedCrop(tf.img_size, tf.scale, tf.ratio, vision.Inter.BICUBIC)]
    if tf.hflip > 0:
        geometric.append(vision.RandomHorizontalFlip(tf.hflip))
    data = data.map(geometric, 'image', num_parallel_workers=workers)
    if tf.rand_augment:
        data = data.map(RandAugment(tf.rand_augment), ['image', 'aug_seed'], ['image', 'aug_seed'],
                        num_parallel_workers=workers)
    data = data.map(_normalize(tf.mean, tf.std), 'image', num_parallel_workers=workers)
    if tf.reprob > 0:
        data = data.map(RandomErasing(tf.reprob), ['image', 'aug_seed'], ['image', 'aug_seed'],
                        num_parallel_workers=workers)
    return data


def mix_choices(tf):
    """The batch mixers ``RandomChoice`` picks from uniformly: with Mixup and CutMix both on, each
    as often as ``mixup_switch_prob`` (to the nearest hundredth) asks, Mixup first."""
    from mindspore.dataset import vision
    mixup = [vision.MixUpBatch(tf.mixup)] if tf.mixup > 0 else []
    cutmix = [vision.CutMixBatch(vision.ImageBatchFormat.NCHW, tf.cutmix)] if tf.cutmix > 0 else []
    if not (mixup and cutmix):
        return mixup + cutmix
    p = Fraction(tf.mixup_switch_prob).limit_denominator(100)
    return mixup * (p.denominator - p.numerator) + cutmix * p.numerator


def _mix(data, tf):
    """Mixup or CutMix of whole batches (one-hot targets); with both, each batch picks one."""
    from mindspore.dataset import transforms
    mixers = mix_choices(tf)
    if not mixers:
        return data
    return data.map(transforms.RandomChoice(mixers) if len(mixers) > 1 else mixers[0], ['image', 'label'])


def train_dataset(root, classes, tf, batch_size, seed, epoch, rank=0, world=1, workers=2, prefetch=0, repeats=0):
    """Batched ``(image (B,3,S,S) float32, target (B,K) float32)`` of epoch ``epoch`` for this rank.

    Shuffling and the C++ random ops follow the dataset seed set from (seed, epoch); the
    Python ops (RandAugment, erasing) follow per-sample seeds from (seed, epoch, rank).
    ``repeats > 1`` samples with repeated augmentation (``repeated_aug_indices``).
    """
    import mindspore.dataset as ds
    from mindspore.dataset import transforms
    _set_prefetch(prefetch)
    workers = workers_here(workers)
    ds.config.set_seed(int(seed) * 100003 + int(epoch))
    if repeats > 1:
        n = _folder(root, 'train', classes, False, 0, 1).get_dataset_size()
        images = _folder(root, 'train', classes, False, rank, world,
                         repeated_aug_indices(n, repeats, seed, epoch, rank, world))
    else:
        images = _folder(root, 'train', classes, True, rank, world)
    sample_seeds = np.random.default_rng([int(seed), int(epoch), rank]).integers(
        0, 2 ** 62, size=images.get_dataset_size())
    data = ds.zip((images, ds.NumpySlicesDataset({'aug_seed': sample_seeds}, shuffle=False)))
    if tf.augment:
        data = _augment(data, tf, workers)
    else:
        data = data.map(_eval_ops(tf.img_size, tf.crop_pct, tf.mean, tf.std), 'image', num_parallel_workers=workers)
    data = data.project(['image', 'label'])
    data = data.map(transforms.OneHot(len(classes), tf.smoothing), 'label')
    data = data.map(transforms.TypeCast(np.float32), 'label')
    data = data.batch(batch_size, drop_remainder=True)
    return _mix(data, tf) if tf.augment else data


def eval_dataset(root, classes, img_size, crop_pct, batch_size, mean=IMAGENET_INCEPTION_MEAN,
                 std=IMAGENET_INCEPTION_STD, rank=0, world=1, workers=2, prefetch=0, split='val'):
    """Batched ``(image, label int32)`` of ``root/split`` for this rank (no shuffling)."""
    from mindspore.dataset import transforms
    _set_prefetch(prefetch)
    workers = workers_here(workers)
    data = _folder(root, split, classes, False, rank, world)
    data = data.map(_eval_ops(img_size, crop_pct, mean, std), 'image', num_parallel_workers=workers)
    data = data.map(transforms.TypeCast(np.int32), 'label')
    return data.batch(batch_size, drop_remainder=False)
