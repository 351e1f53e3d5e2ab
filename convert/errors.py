"""The converters' error: a one-line message about the user's input."""
import importlib


class ConversionError(ValueError):
    """Bad or unsupported input; the message is one line and names what was found."""


def needs_torch(what):
    """``ConversionError`` unless PyTorch imports: ``what`` needs it (the ``torch`` extra)."""
    try:
        importlib.import_module('torch')
    except ImportError:
        raise ConversionError(f"{what} needs PyTorch: pip install 'mindspore-tnt[torch]'") from None
