import pytest


@pytest.fixture(autouse=True)
def _cpu_device():
    import mindspore as ms
    ms.set_device('CPU')
