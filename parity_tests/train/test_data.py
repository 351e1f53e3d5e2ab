"""The training data pipeline: timm-style RandAugment and erasing, seeded and reproducible batches."""
import os

import numpy as np
import pytest

from tnt_train.augment import RandAugment, RandomErasing, _ops, parse_rand_augment
from tnt_train.data import TrainTransform, check_dataset, eval_dataset, export_digits, train_dataset


def image(seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_parse_rand_augment():
    assert parse_rand_augment('rand-m9-mstd0.5-inc1') == dict(
        magnitude=9., num_ops=2, magnitude_std=0.5, magnitude_max=10., increasing=True, prob=0.5)
    assert parse_rand_augment('rand-n3-m7')['num_ops'] == 3
    for bad in ('rand-x9', 'augmix-m5', 'rand-m'):
        with pytest.raises(ValueError):
            parse_rand_augment(bad)


def test_increasing_ops_follow_the_level():
    ops, rng = _ops(increasing=True), np.random.default_rng(0)
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, 2)
    assert set(np.unique(ops['Posterize'](ramp, 9, rng))) == {0, 128}            # 4 - int(3.6) = 1 bit kept
    solarized = ops['Solarize'](ramp, 9, rng)                                     # threshold 256 - 230 = 26
    assert np.array_equal(solarized[ramp < 26], ramp[ramp < 26])
    assert np.array_equal(solarized[ramp >= 26], 255 - ramp[ramp >= 26])
    added = ops['SolarizeAdd'](ramp, 10, rng)                                     # +110 below 128, clipped
    assert added[0, 0, 0] == 110 and added[15, 15, 0] == 255
    assert np.array_equal(ops['Invert'](ramp, 0, rng), 255 - ramp)
    assert np.array_equal(ops['Brightness'](ramp, 0, rng), ramp)                  # level 0: factor 1
    assert not np.array_equal(ops['Rotate'](image(), 9, rng), image())


def test_rand_augment_is_a_function_of_image_and_seed():
    aug = RandAugment('rand-m9-mstd0.5-inc1')
    outs = [aug(image(), seed)[0] for seed in range(20)]
    assert all(np.array_equal(aug(image(), s)[0], outs[s]) for s in range(20))
    changed = sum(not np.array_equal(o, image()) for o in outs)
    assert 10 <= changed < 20     # each of two ops applies with probability 0.5: ~1/4 stay unchanged
    assert len({o.tobytes() for o in outs}) >= changed


def test_random_erasing_pixel_mode():
    erase = RandomErasing(prob=1.)
    x = np.zeros((3, 32, 32), np.float32)
    out = erase(x, 7)[0]
    assert np.array_equal(out, erase(x, 7)[0]) and not x.any()
    region = out != 0
    assert 0.02 * 32 * 32 * 3 * 0.5 < region.sum() <= 32 * 32 * 3 / 3 + 3 * 32
    assert abs(out[region].std() - 1.) < 0.3                  # N(0, 1) per pixel and channel
    assert not RandomErasing(prob=0.)(x, 7)[0].any()


@pytest.fixture(scope='module')
def digits():
    root = export_digits()
    return root, check_dataset(root)


def batches(digits, tf, epoch=0, workers=2, seed=0):
    root, classes = digits
    data = train_dataset(root, classes, tf, 32, seed=seed, epoch=epoch, workers=workers)
    return [(x, y) for x, y in data.create_tuple_iterator(output_numpy=True, num_epochs=1)][:6]


def same(a, b):
    return all(np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_train_batches_are_reproducible(digits):
    """(seed, epoch, worker count) fix every batch; MindSpore's C++ random ops draw per worker."""
    tf = TrainTransform(img_size=32)    # the full recipe: RandAugment, erasing, Mixup/CutMix
    first = batches(digits, tf, workers=2)
    assert same(first, batches(digits, tf, workers=2))
    assert not same(first, batches(digits, tf, epoch=1)) and not same(first, batches(digits, tf, seed=1))
    x, y = first[0]
    assert x.shape == (32, 3, 32, 32) and x.dtype == np.float32 and y.shape == (32, 10)
    np.testing.assert_allclose(y.sum(1), 1., rtol=1e-5)
    assert (y.max(1) < 0.9).any()       # mixed targets, not only smoothed one-hots


def test_no_augment_trains_on_the_eval_view(digits):
    root, classes = digits
    x, y = batches(digits, TrainTransform(img_size=32, augment=False, smoothing=0.))[0]
    assert set(np.unique(y)) == {0., 1.}
    val = next(eval_dataset(root, classes, 32, 0.9, 360).create_tuple_iterator(output_numpy=True, num_epochs=1))[0]
    assert x.min() >= -1. and x.max() <= 1.
    # every training image is an eval-transformed image: same value range and background
    assert np.isclose(x[:, :, 0, 0], val[0, :, 0, 0]).all()


@pytest.mark.parametrize('switch, mixups, cutmixes', [(0.5, 1, 1), (0.3, 7, 3), (0., 1, 0), (1., 0, 1)])
def test_mixup_switch_probability_weights_the_choice(switch, mixups, cutmixes):
    from mindspore.dataset import vision
    from tnt_train.data import mix_choices
    choices = mix_choices(TrainTransform(mixup=0.8, cutmix=1.0, mixup_switch_prob=switch))
    kinds = [type(c) for c in choices]
    assert kinds == [vision.MixUpBatch] * mixups + [vision.CutMixBatch] * cutmixes
    assert [type(c) for c in mix_choices(TrainTransform(mixup=0.8, cutmix=0., mixup_switch_prob=1.))] == \
        [vision.MixUpBatch]                                 # one mixer on: the switch does not apply


def test_repeated_augmentation_indices():
    from tnt_train.data import repeated_aug_indices
    n = 600
    ranks = [repeated_aug_indices(n, 3, seed=0, epoch=0, rank=r, world=2) for r in range(2)]
    assert [len(r) for r in ranks] == [256, 256]            # 600 // 256 * 256 images per epoch, split
    dealt = np.stack(ranks, 1).ravel()                      # the order before dealing to the ranks
    assert all(len(set(dealt[i:i + 3])) == 1 for i in range(0, 510, 3))   # each image three times in a row
    assert len(set(dealt)) == 171 and np.array_equal(ranks[0], repeated_aug_indices(n, 3, 0, 0, 0, 2))
    assert not np.array_equal(ranks[0], repeated_aug_indices(n, 3, 0, 1, 0, 2))
    single = repeated_aug_indices(n, 3, 0, 0)
    assert len(single) == 512 and np.array_equal(single[:3], [single[0]] * 3)


def test_repeated_augmentation_batches_hold_copies(digits):
    root, classes = digits
    tf = TrainTransform(img_size=32, augment=False)
    x, y = next(train_dataset(root, classes, tf, 30, seed=0, epoch=0, repeats=3).create_tuple_iterator(
        output_numpy=True, num_epochs=1))
    for i in range(0, 30, 3):
        assert np.array_equal(x[i], x[i + 1]) and np.array_equal(x[i], x[i + 2])
    assert not np.array_equal(x[0], x[3])
    aug = next(train_dataset(root, classes, TrainTransform(img_size=32), 30, seed=0, epoch=0, repeats=3)
               .create_tuple_iterator(output_numpy=True, num_epochs=1))[0]
    assert not np.array_equal(aug[0], aug[1])               # the copies are augmented differently


def test_images_are_read_whatever_the_case_of_their_suffix(digits, tmp_path):
    """``.Png`` as ``.png``: every image the folder check counts is evaluated (a class of mixed-case
    suffixes was skipped, its images left out of the accuracy)."""
    import pathlib
    import shutil
    root = pathlib.Path(digits[0])
    for split in ('train', 'val'):
        for i, name in enumerate(sorted(os.listdir(root / 'val' / '0'))[:4]):
            folder = tmp_path / split / ('a' if i % 2 else 'b')
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / 'val' / '0' / name, folder / name.replace('.png', ['.png', '.PNG', '.Png', '.pNg'][i]))
    classes = check_dataset(tmp_path)
    data = eval_dataset(tmp_path, classes, 32, 0.875, 8, workers=64)   # more workers than cores: as many as there are
    labels = np.concatenate([y for _, y in data.create_tuple_iterator(output_numpy=True, num_epochs=1)])
    assert sorted(labels.tolist()) == [0, 0, 1, 1]


@pytest.mark.parametrize('save', [{}, {'progressive': True}, {'mode': 'L'}, {'mode': 'CMYK'},
                                  {'exif': b'Exif\0\0' + bytes(60000)}], ids=str)
def test_jpeg_damage_passes_whole_jpegs_and_finds_cut_ones(save):
    """Every cut before the scan's header is found (MindSpore's Decode dies of SIGFPE on some of them:
    ``train/test_inputs.py``, ``tools/test_validate_predict.py``); whole files and other formats pass."""
    from parity_tests.helpers import jpeg_bytes
    from tnt_train.data import jpeg_damage
    data = jpeg_bytes(**save)
    scan = data.index(b'\xff\xda')
    image_data = scan + 2 + int.from_bytes(data[scan + 2:scan + 4], 'big')    # the scan's header ends there
    assert jpeg_damage(data) is None and jpeg_damage(data[:image_data]) is None
    assert jpeg_damage(b'\x89PNG\r\n') is None
    assert jpeg_damage(data[:2] + b'stray' + data[2:]) is None     # skipped, as libjpeg skips them
    for cut in [2, 3, 20, *range(100, image_data, 97), image_data - 1]:
        assert jpeg_damage(data[:cut]) == 'it ends before its image data', cut
