"""Training checkpoints: written atomically, CRC-checked, last K kept plus the best.

A checkpoint holds every Parameter of the training state (weights, AdamW moments and
step, group LRs, the LR schedule's step, EMA weights, loss-scale value and counter),
the default generator's state, and ``meta`` (``Trainer.meta``): epoch, step within the
epoch, global step, steps per epoch, data seed, worker count, best top-1 (the data order and
augmentations follow from them), model, classes, image size and numerics.
"""
import glob
import hashlib
import json
import os
import re

import numpy as np

from tnt_common.files import atomic_output, remove_temporaries
from tnt_common.strict import check_strict
from tnt_train.errors import InputError
from tnt_train.mslog import quiet_mindspore_log

CKPT_DIR = 'checkpoints'
_PATTERN = re.compile(r'step(\d+)\.ckpt$')


def fingerprint(named_arrays):
    """sha256 over ``{name: array}`` in name order: equal weights, equal fingerprints."""
    h = hashlib.sha256()
    for name in sorted(named_arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(named_arrays[name]).tobytes())
    return h.hexdigest()


def state_parameters(*cells_or_params):
    """Unique Parameters (by name, in order) of the given cells and loose Parameters."""
    import mindspore as ms
    out = {}
    for item in cells_or_params:
        params = [item] if isinstance(item, ms.Parameter) else item.get_parameters()
        for p in params:
            out.setdefault(p.name, p)
    return list(out.values())


def atomic_save(params, path, append_dict=None):
    """Write ``params`` (and ``append_dict``) to ``path`` atomically, creating its folder."""
    import mindspore as ms
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output(path) as tmp:
        ms.save_checkpoint([{'name': p.name, 'data': p.value()} for p in params], tmp,
                           append_dict=append_dict, crc_check=True)
    return path


def save_training_state(params, path, meta):
    """A training checkpoint: ``params``, ``meta`` and the default generator's state; the
    model's numerics also as the entry ``convert`` reads."""
    import mindspore as ms
    from convert.keymap import NUMERICS_KEY
    numerics = {NUMERICS_KEY: meta['numerics']} if 'numerics' in meta else {}
    return atomic_save(params, path, {'meta': json.dumps(meta), 'rng_state': ms.get_rng_state(), **numerics})


def read(path):
    """``(arrays {name: Parameter}, meta dict, rng_state)`` of a checkpoint; ``InputError`` if unreadable."""
    import mindspore as ms
    from convert.keymap import NUMERICS_KEY
    if not os.path.isfile(path):
        raise InputError(f'checkpoint {path} does not exist')
    try:
        with quiet_mindspore_log():
            saved = ms.load_checkpoint(path, crc_check=True)
        meta = json.loads(saved.pop('meta'))
        rng_state = saved.pop('rng_state')
        saved.pop(NUMERICS_KEY, None)
    except (ValueError, KeyError, TypeError, RuntimeError, OSError) as e:
        raise InputError(f'checkpoint {path} is corrupt or not a training checkpoint '
                         f'({type(e).__name__})') from None
    return saved, meta, rng_state


def restore(params, saved, path):
    """Load ``saved`` into ``params`` strictly (names and shapes); ``InputError`` on mismatch."""
    try:
        check_strict({p.name: p.shape for p in params}, {k: v.shape for k, v in saved.items()},
                     f'checkpoint {path} does not match this training setup')
    except (KeyError, ValueError) as e:
        raise InputError(e.args[0]) from None
    for p in params:
        p.set_data(saved[p.name].value().astype(p.dtype))


def checkpoints_in(folder):
    """Step checkpoints in ``folder``, oldest first."""
    return sorted((f for f in glob.glob(os.path.join(folder, '*.ckpt')) if _PATTERN.search(os.path.basename(f))),
                  key=step_of)


def step_of(path):
    """The global step in a checkpoint's name (``epochE_stepG.ckpt``)."""
    return int(_PATTERN.search(os.path.basename(path)).group(1))


def run_folder(path):
    """The run folder of the checkpoint file ``path`` (the one holding its ``checkpoints`` folder), or None."""
    folder = os.path.dirname(os.path.realpath(path))
    return os.path.dirname(folder) if os.path.basename(folder) == CKPT_DIR else None


def run_checkpoints(out_dir):
    """The step checkpoints in run folder ``out_dir``, oldest first."""
    return checkpoints_in(os.path.join(out_dir, CKPT_DIR))


def resolve_resume(path):
    """A checkpoint file, or the latest one in a run folder or its checkpoint folder."""
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        for folder in (os.path.join(path, CKPT_DIR), path):
            found = checkpoints_in(folder)
            if found:
                return found[-1]
        raise InputError(f'no checkpoint found in {path}')
    raise InputError(f'checkpoint {path} does not exist')


class CheckpointManager:
    """Writes ``epochE_stepG.ckpt`` into ``<out>/checkpoints``, keeps the last ``keep`` and ``best.ckpt``."""

    NAMES = ('epoch*_step*.ckpt', 'best.ckpt')   # what it writes

    def __init__(self, out_dir, keep=3, enabled=True):
        self.folder = os.path.join(out_dir, CKPT_DIR)
        self.keep = max(int(keep), 1)
        self.enabled = enabled

    def start(self, resumed_at=None):
        """When training starts: the temporaries a killed writer left removed and, resuming from
        the checkpoint of step ``resumed_at``, those written after it (``drop_after``); their paths."""
        if not self.enabled or not os.path.isdir(self.folder):
            return []
        remove_temporaries(self.folder, self.NAMES)
        return [] if resumed_at is None else self.drop_after(resumed_at)

    def save(self, params, meta):
        if not self.enabled:
            return None
        path = save_training_state(params, os.path.join(
            self.folder, f"epoch{meta['epoch']:04d}_step{meta['global_step']:08d}.ckpt"), meta)
        for old in checkpoints_in(self.folder)[:-self.keep]:
            os.remove(old)
        return path

    def save_best(self, params, meta):
        if self.enabled:
            save_training_state(params, os.path.join(self.folder, 'best.ckpt'), meta)

    def drop_after(self, global_step):
        """Remove the checkpoints written after ``global_step`` (a resumed run writes its own); their paths."""
        if not self.enabled:
            return []
        later = [f for f in checkpoints_in(self.folder) if step_of(f) > global_step]
        best = os.path.join(self.folder, 'best.ckpt')
        if os.path.isfile(best):
            try:
                if read(best)[1]['global_step'] > global_step:
                    later.append(best)
            except InputError:   # corrupt: it holds no best any more
                later.append(best)
        for f in later:
            os.remove(f)
        return later


def save_weights(net, path):
    """Model weights only (mindspore_tnt names) and the model's numerics, atomically."""
    from convert.keymap import NUMERICS_KEY
    return atomic_save(list(net.get_parameters()), path, {NUMERICS_KEY: net.numerics.to_json()})
