"""The EMA evaluated and saved through the model itself (``EMA.applied``): inside the block the
model holds the averaged weights, BatchNorm statistics included, and evaluates as a separate
model holding them does; after it, the model's own weights again, bit for bit."""
import mindspore as ms
import mindspore.dataset as ds
import numpy as np
import pytest

import mindspore_tnt
from parity.forward import set_mode
from tnt_train.ema import EMA, averaged
from tnt_train.evaluate import Evaluator

CLASSES, BATCH = 10, 4
SIZES = {'tnt_tiny_patch16_64': 32, 'ptnt_tiny_patch16_64': 64}


def dataset(size):
    """Six images in two batches, the last one padded by the evaluator."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((6, 3, size, size)).astype(np.float32)
    labels = (np.arange(6) % CLASSES).astype(np.int32)
    return ds.NumpySlicesDataset((images, labels), column_names=['image', 'label'], shuffle=False).batch(BATCH)


def state(net):
    return [p.asnumpy() for p in net.get_parameters()]


@pytest.mark.parametrize('name', list(SIZES))
def test_applied_evaluates_the_average_and_restores_the_model(name):
    set_mode('pynative')
    make = lambda: mindspore_tnt.create_model(name, num_classes=CLASSES, img_size=SIZES[name])  # noqa: E731
    ms.set_seed(0)
    net, other = make(), make()
    ema = EMA(net, 0.5)
    rng = np.random.default_rng(1)
    for p in averaged(net):        # the model moves away from its average (a BatchNorm's statistics too)
        p.set_data(ms.Tensor((p.asnumpy() + rng.standard_normal(p.shape) * 0.1).astype(np.float32)))
    before = state(net)
    evaluate = Evaluator(net, CLASSES, BATCH)
    own = evaluate(dataset(SIZES[name]))
    with ema.applied(net):
        averaged_result = evaluate(dataset(SIZES[name]))
        inside = state(net)
    after = state(net)
    ema.copy_to(other)
    assert averaged_result == Evaluator(other, CLASSES, BATCH)(dataset(SIZES[name]))
    assert averaged_result['loss'] != own['loss']                    # the comparison can tell them apart
    assert all(np.array_equal(a, b) for a, b in zip(after, before))
    assert not all(np.array_equal(a, b) for a, b in zip(inside, before))   # ``after`` without the restore
