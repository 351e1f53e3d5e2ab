import gc

import pytest


def pytest_configure(config):
    """The test process on one core, with one thread for each framework's CPU kernels: the queued
    commands (``helpers.Command``) keep the other cores busy, where two kernel threads wait on each
    other at parallel steps (docs/parity.md, Running the suites). The device is the CPU, set before
    anything runs (the commands queued at the start make their inputs with MindSpore too)."""
    from parity_tests.helpers import run_on_one_core
    run_on_one_core()
    import mindspore as ms
    import torch
    from mindspore_tnt.context import select
    ms.device_context.cpu.op_tuning.threads_num(1)
    torch.set_num_threads(1)
    select(device='CPU')


@pytest.fixture(scope='module', autouse=True)
def _young_heap():
    """MindSpore runs a full ``gc.collect()`` before every graph compile, over every object the
    session holds (both frameworks, the cached references): 0.3 s a compile late in the suite.
    Each module starts with the heap collected and frozen, so those collections scan what the
    module made; unfrozen again at the next module, so nothing cyclic outlives its module."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    yield


@pytest.fixture(params=['pynative', 'graph'])
def mode(request):
    """Runs the test in each MindSpore mode, set before it starts (a test that parametrizes
    ``mode`` itself overrides this)."""
    from parity.forward import set_mode
    set_mode(request.param)
    return request.param


@pytest.fixture(scope='session', autouse=True)
def _queue_commands(request, tmp_path_factory):
    """Before the first test: queue the build of the planted kernel faults the selected test
    modules declared, then the commands of each (its ``start_commands``), so that they run while
    the tests before their readers do."""
    from parity_tests.helpers import build_planted_kernels, started
    build_planted_kernels(tmp_path_factory)
    for module in dict.fromkeys(getattr(item, 'module', None) for item in request.session.items):
        if hasattr(module, 'start_commands'):
            started(module.start_commands, tmp_path_factory)
