"""Drop path in the compiled train step takes its masks from the noise fed to that step.

The noise is drawn on the host from (seed, global step, rank), so a resumed run replays the
masks (test_resume.py checks the whole run); here: the same noise gives the same step bit
for bit, other noise another step, every DropPath call takes exactly its share, and a
model left in eval mode (drop path silently off) is reported. The step is the one
test_graph_vs_pynative.py runs (``helpers.shared_drop_path_step``: one compiled graph),
put back to its initial state before each run: its results are a function of the weights
and the noise alone, not of anything the graph keeps from one call to the next.
"""
import mindspore as ms
import numpy as np
import pytest

from parity.forward import set_mode
from parity_tests.helpers import drop_path_step, shared_drop_path_step

BATCH, CLASSES, SIZE = 4, 10, 32


@pytest.fixture(scope='module')
def shared():
    set_mode('graph')
    _, step, noise, reset = shared_drop_path_step('graph')
    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32))
    targets = ms.Tensor(np.eye(CLASSES, dtype=np.float32)[np.arange(BATCH) % CLASSES])
    return step, noise, reset, images, targets


def run(step, noise, images, targets, fed):
    loss, grad_norm = step(images, targets, fed)[:2]
    noise.check_consumed()
    return float(loss.asnumpy()), float(grad_norm.asnumpy())


def test_noise_depends_on_seed_step_and_rank_only(shared):
    _, noise, _, _, _ = shared
    draw = lambda *key: noise.host_noise(*key).asnumpy()  # noqa: E731
    assert noise.values_per_step == 3 * 2 * BATCH * (4 + 1)    # blocks 1-3 drop; 4 patches + class token
    assert np.array_equal(draw(0, 7, 0), draw(0, 7, 0))
    for other in ((1, 7, 0), (0, 8, 0), (0, 7, 1)):
        assert not np.array_equal(draw(0, 7, 0), draw(*other))


def test_same_noise_same_step_other_noise_other_step(shared):
    step, noise, reset, images, targets = shared
    set_mode('graph')
    results = {}
    for key in ((0, 0, 0), (0, 0, 0), (0, 1, 0), (0, 2, 0)):
        reset()
        results.setdefault(key, []).append(run(step, noise, images, targets, noise.host_noise(*key)))
    assert results[(0, 0, 0)][0] == results[(0, 0, 0)][1]
    # from the same weights, the masks of other steps change the result
    assert results[(0, 1, 0)] != results[(0, 2, 0)]


def test_a_model_in_eval_mode_is_reported(shared):
    _, _, _, images, targets = shared
    set_mode('graph')
    _, step, noise = drop_path_step()        # its own: the shared step stays in training mode
    step.set_train(False)
    with pytest.raises(RuntimeError, match='drew 0 noise values in a step, 120 were fed'):
        run(step, noise, images, targets, noise.host_noise(0, 0, 0))
