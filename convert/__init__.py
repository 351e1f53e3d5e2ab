"""Checkpoint conversion between PyTorch (timm and official layouts) and MindSpore TNT and PyramidTNT.

Importing ``convert`` loads neither torch nor MindSpore; the API below is imported on
first use: ``load_torch_into_mindspore``, ``load_mindspore_into_torch``,
``convert_file`` and ``ConversionError``.
"""
import importlib

_LAZY = {
    'load_torch_into_mindspore': 'convert.api',
    'load_mindspore_into_torch': 'convert.api',
    'convert_file': 'convert.files',
    'ConversionError': 'convert.errors',
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
