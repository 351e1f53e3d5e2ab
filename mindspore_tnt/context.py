"""MindSpore's execution mode and device: set for the process, or the mode for a block.

MindSpore (2.10) fixes a process's device once: ``ms.set_device`` accepts the device it
fixed again but raises for another one, and once a kernel has run it raises for any,
the current target included. Code that runs inside a caller's program (``execution``)
therefore never sets a device: it runs on the caller's.
"""
import contextlib

MODES = {'graph': 0, 'pynative': 1}   # ms.GRAPH_MODE, ms.PYNATIVE_MODE


def select(mode=None, device=None):
    """Set the execution ``mode`` ('graph' or 'pynative') and ``device`` ('CPU', 'GPU', 'Ascend') for the process.

    A ``device`` that is already the current target is kept where MindSpore refuses to set it again.
    On CPU, operators launch synchronously: PyNative's asynchronous launch pipeline hands every
    operator to another thread, which on CPU costs more than it overlaps (docs/performance.md,
    "PyNative on CPU"); GRAPH mode runs as fast either way.
    """
    import mindspore as ms
    if device is not None:
        current = device == ms.get_context('device_target')
        try:
            ms.set_device(device)
        except RuntimeError:
            if not current:
                raise
        if device == 'CPU':
            ms.runtime.launch_blocking()
    if mode is not None:
        ms.set_context(mode=MODES[mode])


@contextlib.contextmanager
def execution(mode):
    """Run the block in ``mode`` ('graph' or 'pynative') on the caller's device, then restore the caller's mode.

    The mode is restored also when the block raises; the device is left as the caller set it.
    """
    import mindspore as ms
    caller_mode = ms.get_context('mode')
    select(mode)
    try:
        yield
    finally:
        ms.set_context(mode=caller_mode)
