"""Atomic outputs: a file or folder appears whole under its name, or not at all; figures to write as PNG."""
import contextlib
import glob
import os
import shutil
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_temporaries(folder, names):
    """Remove the files ``atomic_output`` writers of ``names`` (glob patterns of output names)
    left in ``folder`` when killed mid-write: for the process that owns those outputs, when it
    starts writing them. Nothing else is touched."""
    for name in names:
        for stale in glob.glob(os.path.join(glob.escape(folder), f'.{name}.tmp-*')):
            if os.path.isfile(stale) and not os.path.islink(stale):
                os.remove(stale)


def unwritable(folder):
    """Why files cannot be written into ``folder`` (made first if missing), or None: probed with a
    temporary file in it, or in its nearest existing ancestor, so that nothing is left behind."""
    if not folder:
        return 'no folder named'
    probe = os.path.abspath(folder)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return f'{probe} is not a folder'
    try:
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as e:
        return f'{probe} is not writable ({e.strerror})'
    return None


@contextlib.contextmanager
def atomic_output(path, suffix=None, directory=False):
    """Yield a temporary path beside ``path`` to write; it becomes ``path`` when the block succeeds.

    The temporary is ``.NAME.tmp-XXXX`` plus ``suffix`` (default: NAME's extension, so writers
    that go by the suffix see the right one), in ``path``'s folder, so the final
    ``os.replace`` is atomic; a file is synced to disk first and given the usual permissions
    (``0o666`` less the umask, ``0o777`` for a folder). If the block raises, the temporary is
    removed and ``path`` is left as it was. ``directory``: the temporary is an empty folder,
    which replaces ``path`` only if ``path`` does not exist or is an empty folder.
    """
    folder, name = os.path.split(os.path.abspath(path))
    prefix = f'.{name}.tmp-'
    suffix = os.path.splitext(name)[1] if suffix is None else suffix
    try:
        if directory:
            tmp = tempfile.mkdtemp(prefix=prefix, dir=folder)
        else:
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
            os.close(fd)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None   # the user knows the output, not its temporary
    try:
        yield tmp
        if not directory:
            with open(tmp, 'rb') as f:
                os.fsync(f.fileno())
        os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        if e.filename != tmp:
            raise
        raise OSError(e.errno, e.strerror, path) from None   # the user knows the output, not its temporary
    finally:
        if directory:
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            os.unlink(tmp)


def figure(**kwargs):
    """A matplotlib ``Figure(**kwargs)`` on the Agg canvas, to ``savefig`` a PNG: without pyplot,
    whose import and global figure list a plot written to a file does not need."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig
