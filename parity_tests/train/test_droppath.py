"""Drop path in the compiled train step takes its masks from the noise fed to that step.

The noise is drawn on the host from (seed, global step, rank), so a resumed run replays the
masks (test_train_resume.py checks the whole run); here: the same noise gives the same step
bit for bit, other noise another step, every DropPath call takes exactly its share, and a
model left in eval mode (drop path silently off) is reported.
"""
import mindspore as ms
import numpy as np
import pytest

import mindspore_tnt
from tnt_train.droppath import DropPathNoise
from tnt_train.model import copy_weights
from tnt_train.optim import create_optimizer
from tnt_train.train_step import TrainStep

NAME, SIZE, BATCH, CLASSES, DROP_PATH = 'tnt_tiny_patch16_64', 32, 4, 10, 0.5


def make_step(init=None):
    net = mindspore_tnt.create_model(NAME, num_classes=CLASSES, img_size=SIZE, drop_path_rate=DROP_PATH)
    if init is not None:
        copy_weights(init, net)
    optimizer, schedule = create_optimizer(net, [1e-3] * 10)
    noise = DropPathNoise(net, BATCH)
    step = TrainStep(net, optimizer, schedule, clip_grad=5., drop_path_noise=noise)
    step.set_train(True)
    return net, step, noise


@pytest.fixture(scope='module')
def steps():
    ms.set_device('CPU')
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    net_a, step_a, noise_a = make_step()
    _, step_b, noise_b = make_step(net_a)
    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32))
    targets = ms.Tensor(np.eye(CLASSES, dtype=np.float32)[np.arange(BATCH) % CLASSES])
    return (step_a, noise_a), (step_b, noise_b), images, targets


def run(step, noise, images, targets, fed):
    loss, grad_norm = step(images, targets, fed)[:2]
    noise.check_consumed()
    return float(loss.asnumpy()), float(grad_norm.asnumpy())


def test_noise_depends_on_seed_step_and_rank_only(steps):
    (_, noise), _, _, _ = steps
    draw = lambda *key: noise.host_noise(*key).asnumpy()  # noqa: E731
    assert noise.values_per_step == 3 * 2 * BATCH * (4 + 1)    # blocks 1-3 drop; 4 patches + class token
    assert np.array_equal(draw(0, 7, 0), draw(0, 7, 0))
    for other in ((1, 7, 0), (0, 8, 0), (0, 7, 1)):
        assert not np.array_equal(draw(0, 7, 0), draw(*other))


def test_same_noise_same_step_other_noise_other_step(steps):
    (step_a, noise_a), (step_b, noise_b), images, targets = steps
    fed = noise_a.host_noise(0, 0, 0)
    assert run(step_a, noise_a, images, targets, fed) == run(step_b, noise_b, images, targets, fed)
    # the weights are equal again; the masks of another step change the result
    assert run(step_a, noise_a, images, targets, noise_a.host_noise(0, 1, 0)) != \
        run(step_b, noise_b, images, targets, noise_b.host_noise(0, 2, 0))


def test_a_model_in_eval_mode_is_reported(steps):
    _, _, images, targets = steps
    _, step, noise = make_step()        # its own: the fixture's steps must stay in step with each other
    step.set_train(False)
    with pytest.raises(RuntimeError, match='drew 0 noise values in a step, 120 were fed'):
        run(step, noise, images, targets, noise.host_noise(0, 0, 0))
