"""Blocks of the same structure compiled once per graph.

``reusable(cls)`` marks a Cell class with MindSpore's ``lazy_inline(policy='front')``: in GRAPH
mode the front end compiles one subgraph per key and inlines it at every call, instead of
parsing and optimising each block again (TNT-S inference compiles in 40 % of the time,
docs/performance.md). MindSpore's own key is the ``__init__`` arguments, blind to anything
changed after construction (a sub-cell replaced, a kernel swapped, AMP's casts in one block):
such a block would run its siblings' graph. Here the key is the block's structure as it is
when the graph is compiled (``structure_key``), so a changed block gets a graph of its own.
Parameters are the subgraph's inputs, never part of the key. For cells whose ``construct``
takes tensors only (TNT's ``Block``): a Python number argument would not be part of the key.
PYNATIVE mode is untouched.
"""
import functools
import hashlib
import types

import mindspore as ms
from mindspore import nn, ops
from mindspore.graph.lazy_inline import lazy_inline

# Per-instance bookkeeping of a Cell that does not change what it computes.
BOOKKEEPING = frozenset({'_create_time', '_id', '_cell_init_args', '_param_prefix', '_cells', '_params',
                         '_params_list', '_primitives', '_compile_cache', '_exist_names', '_exist_objs', '_scope'})
_KEPT = {}
# Where MindSpore supports lazy_inline (Ascend) and where it was measured here (CPU).
DEVICES = ('CPU', 'Ascend')


def _value(v):
    """What ``v`` contributes to the key: plain values by value, anything else by identity."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (tuple, list)):
        return type(v).__name__, tuple(_value(x) for x in v)
    if isinstance(v, dict):
        return 'dict', tuple(sorted((str(k), _value(x)) for k, x in v.items()))
    if isinstance(v, ms.Tensor) and not isinstance(v, ms.Parameter):
        return 'tensor', str(v.dtype), v.shape, hashlib.sha256(v.asnumpy().tobytes()).hexdigest()
    if isinstance(v, ops.Primitive) and not isinstance(v, ops.Custom):
        return 'primitive', type(v).__name__, _value(dict(v.attrs))
    if isinstance(v, types.MethodType):
        return 'method', _identity(v.__self__), _identity(v.__func__)
    return 'object', _identity(v)


def _identity(obj):
    """``id(obj)``, with ``obj`` kept alive: an id is never handed to another object while a
    compiled graph may still be keyed by it."""
    _KEPT.setdefault(id(obj), obj)
    return id(obj)


def structure_key(cell):
    """A string equal for two cells exactly when they and their sub-cells have the same types,
    modes and attributes (Parameters aside)."""
    parts = []
    for name, sub in cell.cells_and_names():
        rate = sub.p if isinstance(sub, nn.Dropout) else getattr(sub, 'drop_prob', None)  # dropout, drop path
        if rate is not None and sub.training and getattr(sub, 'fed', False):
            attrs = ('fed', _value(sub.kernel))   # noise and keep come in as inputs: its rate plays no part
        elif rate is not None and (not sub.training or rate == 0):
            attrs = ()                    # the identity: its rate, seeds and noise never run
        elif rate is not None:
            attrs = ('draws', _identity(sub))   # its random draws stay its own: no graph shared
        else:
            attrs = tuple((k, _value(v)) for k, v in sorted(vars(sub).items())
                          if k not in BOOKKEEPING and not isinstance(v, (ms.Parameter, nn.Cell)))
        parts.append((name, type(sub).__qualname__, sub.training, attrs))
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def reusable(cls):
    """``cls`` with its instances of the same ``structure_key`` compiled once per graph, on the
    device targets where that was run (``DEVICES``); elsewhere each instance is its own.

    No key while ``__init__`` runs: MindSpore reads it (and formats the sub-cell) at every sub-cell
    assignment, only to append to it, which made building TNT-S's blocks cost more than their
    weights' initialisation."""
    init = cls.__init__

    @functools.wraps(init)
    def building(self, *args, **kwargs):
        object.__setattr__(self, '_reuse_building', True)
        try:
            init(self, *args, **kwargs)
        finally:
            del self.__dict__['_reuse_building']

    def key(self):
        if '_reuse_building' in self.__dict__ or ms.get_context('device_target') not in DEVICES:
            raise AttributeError('_cell_init_args')   # no key: compiled as any cell
        return f'lazy_inline_{cls.__qualname__}_{structure_key(self)}'

    cls.__init__ = lazy_inline(building, policy='front')
    cls._cell_init_args = property(key, lambda self, value: None)
    return cls
