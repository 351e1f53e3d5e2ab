"""Building and loading the vectorised CPU kernels (``gelu_cpu.cc``, ``layernorm_cpu.cc``, ``bias_cpu.cc``, ...).

Each kernel source is compiled on first use with the system C++ compiler (``$CXX``, else
``g++``) for this machine (``-march=native``) and cached in ``$XDG_CACHE_HOME/mindspore_tnt``
or ``~/.cache/mindspore_tnt``, keyed by the source and the headers it may include
(``HEADERS``), the compiler version, the CPU's features
and the flags. ``load`` returns the built library's path, or None (with a RuntimeWarning
naming the build's error) where it cannot be built or loaded.
"""
import ctypes
import hashlib
import os
import platform
import subprocess
import warnings

from mindspore import ops

from tnt_common.files import atomic_output

HERE = os.path.dirname(os.path.abspath(__file__))
# -fno-trapping-math: no float comparison may trap, so the compiler may turn a loop's selects into
# blends and vectorise it (without it GCC left erf_lanes scalar for AVX2: docs/performance.md). It
# changes no value: no reassociation, no contraction that -ffp-contract's default does not make.
COMPILE_FLAGS = ('-std=c++17', '-O3', '-march=native', '-fno-math-errno', '-fno-trapping-math', '-fopenmp-simd',
                 '-pthread', '-shared', '-fPIC')
HEADERS = ('aot_kernel.h', 'cpu_parallel.h', 'vector_math.h')
LINK_FLAGS = ('-lmvec',)


def _cache_dir():
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'mindspore_tnt')


def _cpu_features():
    """The CPU feature line of /proc/cpuinfo: a ``-march=native`` build is only valid for it."""
    with open('/proc/cpuinfo') as f:
        return next((line for line in f if line.startswith(('flags', 'Features'))), '')


def compiler():
    """The C++ compiler kernels are built with: ``$CXX``, else ``g++``."""
    return os.environ.get('CXX', 'g++')


def build(source, compiler):
    """Path of ``source`` (a file name next to this module, or a path) built for this machine, compiling it
    unless cached; ``HEADERS`` are included from this module's directory."""
    path_in = os.path.join(HERE, source)
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256()
    for name in (source, *HEADERS):
        with open(os.path.join(HERE, name), 'rb') as f:
            key.update(f.read())
    for part in (version, _cpu_features(), platform.machine(), *COMPILE_FLAGS, *LINK_FLAGS):
        key.update(part.encode())
    stem = os.path.splitext(source)[0]
    path = os.path.join(_cache_dir(), f'{stem}-{key.hexdigest()[:16]}.so')
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_output(path) as tmp:
            subprocess.run([compiler, *COMPILE_FLAGS, '-I', HERE, '-o', tmp, path_in, *LINK_FLAGS],
                           capture_output=True, text=True, check=True)
    ctypes.CDLL(path)  # every symbol resolves (the vector math library has erff and expf)
    return path


def load(source, what, make_ops):
    """``make_ops(path)`` of ``source`` built by ``build``, or None with a warning that MindSpore's
    ``what`` runs instead (not Linux, no compiler, a failed build or load)."""
    if platform.system() != 'Linux':
        return None
    try:
        return make_ops(build(source, compiler()))
    except (OSError, subprocess.CalledProcessError, TypeError, ValueError) as e:
        detail = getattr(e, 'stderr', None) or str(e)
        warnings.warn(f"mindspore_tnt: CPU {what} kernel unavailable, using MindSpore's {what} "
                      f"({detail.strip().splitlines()[-1] if detail.strip() else type(e).__name__})",
                      RuntimeWarning, stacklevel=3)
        return None


def unary_ops(path, name, grad_of_output=False):
    """``path:name`` as an AOT custom op from one float32 tensor to one of its shape, whose bprop is
    ``path:nameGrad`` of (its input, or with ``grad_of_output`` its output; the output's gradient)."""
    grad = ops.Custom(f'{path}:{name}Grad', out_shape=lambda x, dy: x, out_dtype=lambda x, dy: x, func_type='aot')

    def bprop(x, out, dout):
        return (grad(out if grad_of_output else x, dout),)

    return ops.Custom(f'{path}:{name}', out_shape=lambda x: x, out_dtype=lambda x: x, func_type='aot', bprop=bprop)
