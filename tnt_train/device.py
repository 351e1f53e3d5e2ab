"""Device, execution mode, seeding and (under msrun) the data-parallel process group."""
import os
from dataclasses import dataclass

from tnt_common.cli import DEVICES


@dataclass(frozen=True)
class Runtime:
    device: str
    rank: int = 0
    world: int = 1

    @property
    def is_main(self):
        """Only rank 0 writes logs, checkpoints and plots."""
        return self.rank == 0


def is_available(name):
    """Whether MindSpore can use device ``name`` ('Ascend', 'GPU' or 'CPU') here."""
    import mindspore as ms
    from tnt_train.mslog import quiet_mindspore_log
    if name == 'CPU':
        return True
    with quiet_mindspore_log():   # an absent backend is expected here, not worth a warning
        return bool({'Ascend': ms.device_context.ascend, 'GPU': ms.device_context.gpu}[name].is_available())


def available_device():
    """The best device MindSpore can use here: Ascend, then GPU, then CPU."""
    return next(name for name in ('Ascend', 'GPU', 'CPU') if is_available(name))


def launched_by_msrun():
    """msrun starts a scheduler and the workers, each running this script with ``MS_ROLE`` set."""
    return os.environ.get('MS_ROLE') in ('MS_WORKER', 'MS_SCHED')


def setup(device='auto', pynative=False, seed=0):
    """Select the device and mode, join the msrun process group if launched by it, seed everything.

    Every rank uses the same seed, so models built after this call start from the same
    weights on all ranks (MindSpore does not broadcast initial weights).
    """
    import mindspore as ms
    from mindspore_tnt.context import select
    if device not in DEVICES:
        raise ValueError(f'unknown device {device!r}; choose one of {", ".join(DEVICES)}')
    device = available_device() if device == 'auto' else device
    if not is_available(device):
        from tnt_train.errors import InputError
        raise InputError(f'--device {device}: MindSpore finds no {device} here (it has {available_device()})')
    select('pynative' if pynative else 'graph', device)
    rank, world = 0, 1
    if launched_by_msrun():
        from mindspore.communication import get_group_size, get_rank, init
        init()   # the scheduler process serves the cluster here and exits with it
        rank, world = get_rank(), get_group_size()
    ms.set_seed(seed)
    return Runtime(device, rank, world)
