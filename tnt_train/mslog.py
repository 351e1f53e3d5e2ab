"""Silencing MindSpore's Python log for calls whose failure we report ourselves."""
import contextlib
import logging


@contextlib.contextmanager
def quiet_mindspore_log():
    """Disable MindSpore's logger (named ``ME.*``) inside the block."""
    loggers = [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict) if n.startswith('ME.')]
    saved = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        yield
    finally:
        for lg, d in zip(loggers, saved):
            lg.disabled = d
