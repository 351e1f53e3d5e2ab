"""Drop path and dropout: active in training mode, the identity in eval, in both frameworks."""
import mindspore as ms
import numpy as np
import pytest
import torch

from mindspore_tnt.tnt import DropPath as MsDropPath
from tnt_common.fixtures import make_batch
from parity.forward import random_models, set_mode
from torch_ref.tnt import DropPath as PtDropPath

NAME = 'tnt_tiny_patch16_64'
RATES = dict(drop_rate=0.3, pos_drop_rate=0.1, proj_drop_rate=0.1, attn_drop_rate=0.1,
             drop_path_rate=0.5)


def per_sample_values(out):
    """The distinct values of each sample of a drop-path output of ones."""
    return [np.unique(sample) for sample in out]


def test_torch_drop_path_is_per_sample():
    torch.manual_seed(0)
    dp = PtDropPath(0.5).train()
    out = dp(torch.ones(256, 4, 3)).numpy()
    values = per_sample_values(out)
    assert all(len(v) == 1 and v[0] in (0., 2.) for v in values)
    kept = np.mean([v[0] == 2. for v in values])
    assert 0.35 < kept < 0.65
    assert np.array_equal(dp.eval()(torch.ones(4, 2)).numpy(), np.ones((4, 2)))


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
def test_mindspore_drop_path_is_per_sample(mode):
    set_mode(mode)
    ms.set_seed(0)
    dp = MsDropPath(0.5)
    dp.set_train(True)
    out = dp(ms.ops.ones((256, 4, 3), ms.float32)).asnumpy()
    values = per_sample_values(out)
    assert all(len(v) == 1 and v[0] in (0., 2.) for v in values)
    kept = np.mean([v[0] == 2. for v in values])
    assert 0.35 < kept < 0.65
    dp.set_train(False)
    assert np.array_equal(dp(ms.ops.ones((4, 2), ms.float32)).asnumpy(), np.ones((4, 2)))


@pytest.mark.parametrize('mode', ['pynative', 'graph'])
def test_regularisation_train_vs_eval(mode):
    set_mode(mode)
    ms.set_seed(0)
    torch.manual_seed(0)
    plain_pt, plain_ms = random_models(NAME, seed=1)
    reg_pt, reg_ms = random_models(NAME, seed=1, **RATES)
    x = make_batch(4, 64, seed=1)

    plain_pt.eval(), reg_pt.eval()
    with torch.no_grad():
        ref = plain_pt(torch.from_numpy(x)).numpy()
        assert np.array_equal(reg_pt(torch.from_numpy(x)).numpy(), ref)
        reg_pt.train()
        a, b = (reg_pt(torch.from_numpy(x)).numpy() for _ in range(2))
    assert not np.allclose(a, ref) and not np.allclose(a, b)

    plain_ms.set_train(False), reg_ms.set_train(False)
    ref = plain_ms(ms.Tensor(x)).asnumpy()
    assert np.array_equal(reg_ms(ms.Tensor(x)).asnumpy(), ref)
    reg_ms.set_train(True)
    a, b = (reg_ms(ms.Tensor(x)).asnumpy() for _ in range(2))
    assert not np.allclose(a, ref) and not np.allclose(a, b)
