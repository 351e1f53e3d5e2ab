"""Load torch checkpoints, training files included, without running code they name.

``load_torch(path)`` runs ``torch.load(weights_only=False)`` with this module as its
``pickle_module``, so every global the pickle names reaches ``Unpickler.find_class``:

- tensor and plain-data machinery gets the real object (``allowed()``: torch's own
  weights-only allowlist, numpy array reconstruction, plain builtins and containers,
  ``argparse.Namespace``, dates, paths);
- a class or function of any other non-stdlib package (``mmengine``, a project's own
  ``Config``) becomes a ``Placeholder`` class: nothing is imported, whatever the pickle
  hands it is only stored;
- anything else (the stdlib's ``os``, ``subprocess``, ``builtins.eval``, ...; torch and
  numpy beyond the allowlist) is refused with a one-line ``ConversionError``.

The unpickler is pickle's pure-Python one, so two more opcodes are checked: BUILD (setting
an object's state) only on instances of allowed classes and placeholders, never on a class
or function; EXT (extension codes) goes through ``find_class``, not pickle's cache.
TorchScript archives, which ``torch.load`` would hand to ``torch.jit.load``, are refused.
``Unpickler`` and ``load`` are what ``torch.load`` uses of a ``pickle_module``.
"""
import _compat_pickle
import argparse
import collections
import copyreg
import datetime
import functools
import os
import pathlib
import pickle
import sys
import types
import warnings

from convert.errors import ConversionError

_RESAVE = ('If you trust the file, re-save just its weights on a trusted machine and convert those, e.g. '
           'python -c "import torch; c = torch.load({path!r}, weights_only=False); torch.save(c.state_dict() '
           'if hasattr(c, \'state_dict\') else c.get(\'state_dict\', c), \'weights.pth\')"')
_RESAVE_SCRIPTED = ('If you trust the file, re-save just its weights on a trusted machine and convert those, '
                    'e.g. python -c "import torch; torch.save(torch.jit.load({path!r}).state_dict(), \'weights.pth\')"')


class Refused(ConversionError):
    """The pickle asks for something no checkpoint needs and that could run code."""

    def __init__(self, action):
        super().__init__(f'refused: the pickle {action}, which no checkpoint needs; loading it could run code.')


def _printable(text, limit=200):
    """``text`` on one line (escaped if it holds control characters), at most ``limit`` characters."""
    text = text if text.isprintable() else ascii(text)[1:-1]
    return text if len(text) <= limit else text[:limit] + '...'


def _describe(obj):
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
        kind = 'class' if isinstance(obj, type) else 'function'
        return f'the {kind} {_printable(f"{obj.__module__}.{obj.__qualname__}")}'
    return f'a {_printable(type(obj).__qualname__)} object'


def _latin1(text, encoding):
    """``_codecs.encode`` as pickle protocols 0-2 use it for bytes: latin-1 only, no codec lookup."""
    if encoding not in ('latin1', 'latin-1'):
        raise Refused(f'calls _codecs.encode with the {_printable(repr(encoding))} codec')
    return str.encode(text, 'latin-1')


@functools.cache
def allowed():
    """``{'module.name': object}``: the globals a pickle gets as the real objects."""
    import numpy as np
    import torch
    from numpy.core import multiarray, numeric
    from torch._weights_only_unpickler import _get_allowed_globals

    # torch's weights-only table: tensor/parameter rebuild functions, storage and tensor
    # classes, dtypes, qschemes, torch.Size, torch.device, the layout getter.
    table = {k: v for k, v in _get_allowed_globals().items() if k.startswith('torch.')}
    table['torch._tensor._rebuild_from_type_v2'] = _tensor_from_type(table['torch._tensor._rebuild_from_type_v2'], {
        v for k, v in table.items() if k.startswith('torch._utils._rebuild')})
    table['torch.torch_version.TorchVersion'] = torch.torch_version.TorchVersion
    for core in ('numpy.core', 'numpy._core'):  # numpy 2 writes numpy._core
        table[f'{core}.multiarray._reconstruct'] = _reconstruct(multiarray._reconstruct)
        table[f'{core}.multiarray.scalar'] = lambda dtype, *obj: multiarray.scalar(_object_free(dtype), *obj)
        table[f'{core}.numeric._frombuffer'] = lambda buf, dtype, *rest: numeric._frombuffer(
            buf, _object_free(dtype), *rest)
    table['numpy.ndarray'], table['numpy.dtype'] = _ArrayType(), np.dtype
    table.update({f'numpy.{t.__name__}': t for t in np.sctypeDict.values() if np.dtype(t).kind not in 'OV'})
    table.update({f'numpy.dtypes.{k}': v for k, v in vars(np.dtypes).items()
                  if isinstance(v, type) and issubclass(v, np.dtype)})
    plain = (bool, int, float, complex, str, bytes, bytearray, tuple, list, dict, set, frozenset, slice, range,
             collections.OrderedDict, collections.defaultdict, collections.Counter,
             argparse.Namespace, types.SimpleNamespace,
             datetime.date, datetime.time, datetime.datetime, datetime.timedelta, datetime.timezone,
             pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath)
    table.update({f'{c.__module__}.{c.__qualname__}': c for c in plain})
    table['_codecs.encode'] = _latin1
    return table


def _object_free(dtype):
    """``dtype`` if none of its fields, however nested, holds Python objects; refused otherwise.

    numpy's own ``hasobject`` flag is part of a pickled dtype's state, so it proves nothing:
    a structured dtype claiming no objects would make raw bytes from the file into pointers.
    """
    import numpy as np
    stack = [np.dtype(dtype)]
    while stack:
        dt = stack.pop()
        if dt.kind == 'O':
            raise Refused('builds numpy data of Python objects')
        if dt.subdtype is not None:
            stack.append(dt.subdtype[0])
        stack.extend(field[0] for field in (dt.fields or {}).values())
    return dtype


class _ArrayType:
    """What a pickle gets for ``numpy.ndarray``: the type argument of array reconstruction.
    Called, ``ndarray(shape, dtype, buffer)`` would view bytes of the file as any dtype."""

    def __call__(self, *args, **kwargs):
        raise Refused('constructs a numpy array over raw memory')


def _reconstruct(real):
    """numpy's array reconstruction, for plain ``ndarray``s of object-free dtypes only."""
    def reconstruct(subtype, shape, dtype):
        import numpy as np
        if not isinstance(subtype, _ArrayType):
            raise Refused(f'reconstructs {_describe(subtype)} as a numpy array')
        return real(np.ndarray, shape, _object_free(dtype))
    return reconstruct


def _tensor_from_type(real, rebuilds):
    """torch's ``_rebuild_from_type_v2``, for tensors only: any other ``func``/``new_type``
    would call an allowed constructor's ``__setstate__`` where BUILD is not checked."""
    def rebuild(func, new_type, args, state):
        import torch
        if func not in rebuilds or not (isinstance(new_type, type) and issubclass(new_type, torch.Tensor)):
            raise Refused(f'rebuilds {_describe(new_type)} through {_describe(func)}')
        return real(func, new_type, args, state)
    return rebuild


@functools.cache
def _buildable():
    import numpy as np
    return (Placeholder, np.ndarray) + tuple({v for v in allowed().values() if isinstance(v, type)})


class Placeholder:
    """Stands for an object of a class that is never imported; it only keeps what the pickle gives it.

    ``module`` and ``name`` are the class the pickle named; ``args``/``kwargs`` what it was
    constructed with, ``state`` its ``__setstate__`` argument, ``dictitems`` and
    ``listitems`` the items set on it and appended to it.
    """
    module = name = ''

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        self.args, self.kwargs, self.state, self.dictitems, self.listitems = args, kwargs, None, {}, []
        return self

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.dictitems[key] = value

    def append(self, value):
        self.listitems.append(value)

    def extend(self, values):
        self.listitems.extend(values)

    def __repr__(self):
        return f'<placeholder for {self.module}.{self.name}>'


class Unpickler(pickle._Unpickler):
    """pickle's pure-Python unpickler, restricted as the module docstring says."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._placeholders = {}

    def find_class(self, module, name):
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as pickle maps them
            module, name = _compat_pickle.NAME_MAPPING.get(
                (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        full = f'{module}.{name}'
        table = allowed()
        if full in table:
            return table[full]
        top = module.partition('.')[0]
        if top in ('torch', 'numpy') or top in sys.stdlib_module_names:
            raise Refused(f'calls {_printable(full)}')
        if (module, name) not in self._placeholders:
            self._placeholders[module, name] = type(_printable(name), (Placeholder,),
                                                    {'module': module, 'name': name})
        return self._placeholders[module, name]

    def get_extension(self, code):
        key = copyreg._inverted_registry.get(code)
        if not key:
            raise pickle.UnpicklingError(f'unregistered extension code {code}')
        self.append(self.find_class(*key))

    def _load_build(self):
        import numpy as np
        inst, state = self.stack[-2], self.stack[-1]
        if not isinstance(inst, _buildable()):
            raise Refused(f'sets the state of {_describe(inst)}')
        if isinstance(inst, np.ndarray):  # (version, shape, dtype, fortran, data): the dtype decides
            for part in state if isinstance(state, tuple) else (state,):
                if isinstance(part, np.dtype):
                    _object_free(part)
        pickle._Unpickler.load_build(self)
        if isinstance(inst, np.dtype):  # its fields were just set from the file
            _object_free(inst)

    dispatch[pickle.BUILD[0]] = _load_build


def load(file, **kwargs):
    """``pickle.load`` through ``Unpickler``."""
    return Unpickler(file, **kwargs).load()


def load_torch(path):
    """``torch.load`` of a zip or legacy torch file through ``Unpickler`` (zip files memory-mapped).

    Raises ConversionError (one line, with what to do) for anything refused; torch's own
    errors on damaged files pass through.
    """
    import torch
    from torch.serialization import _is_torchscript_zip, _open_zipfile_reader
    path = os.fspath(path)
    with open(path, 'rb') as f:
        zipped = f.read(4) == b'PK\x03\x04'  # torch.load's own test
    if zipped:
        with _open_zipfile_reader(path) as archive:
            if _is_torchscript_zip(archive):
                raise ConversionError('refused: a TorchScript archive, which holds code, not just weights. '
                                      + _RESAVE_SCRIPTED.format(path=path))
    try:
        with warnings.catch_warnings():  # torch's notes on legacy storages and module sources
            warnings.simplefilter('ignore')
            return torch.load(path, map_location='cpu', weights_only=False,
                              pickle_module=sys.modules[__name__], mmap=zipped)
    except Refused as e:
        raise ConversionError(f'{e} {_RESAVE.format(path=path)}') from None
