"""GELU, exact (erf) or the tanh approximation; the exact form's CPU path is a vectorised kernel.

MindSpore's CPU GELU evaluates erf one element at a time: on an MLP activation of TNT-S
(25088 x 96 floats) it takes about 25x as long as the vectorised loop of ``gelu_cpu.cc``,
and the forward and backward GELUs were a fifth of the model's CPU time. ``GELU`` with
``cpu_kernel=True`` runs that loop and its gradient as MindSpore AOT custom ops, compiled
on first use with the system C++ compiler against glibc's vector math library and cached
(``$XDG_CACHE_HOME/mindspore_tnt`` or ``~/.cache/mindspore_tnt``). Everywhere else -- an
fp16 input (AMP O3), another device, no compiler or vector library, a failed build -- it is
``nn.GELU(approximate=False)`` itself, the formula the kernel computes. The tanh form
(``approximate=True``) is always ``nn.GELU(approximate=True)``.
"""
import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import warnings

import mindspore as ms
from mindspore import nn, ops

from tnt_common.files import atomic_output

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'gelu_cpu.cc')
COMPILE_FLAGS = ('-std=c++17', '-O3', '-march=native', '-fno-math-errno', '-fopenmp-simd', '-shared', '-fPIC')
LINK_FLAGS = ('-lmvec',)


def _cache_dir():
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'mindspore_tnt')


def _cpu_features():
    """The CPU feature line of /proc/cpuinfo: a ``-march=native`` build is only valid for it."""
    with open('/proc/cpuinfo') as f:
        return next((line for line in f if line.startswith(('flags', 'Features'))), '')


def _build(compiler):
    """Path of the kernels built for this machine, compiling them unless cached."""
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True, check=True).stdout
    with open(SOURCE, 'rb') as f:
        key = hashlib.sha256(f.read())
    for part in (version, _cpu_features(), platform.machine(), *COMPILE_FLAGS, *LINK_FLAGS):
        key.update(part.encode())
    path = os.path.join(_cache_dir(), f'gelu_cpu-{key.hexdigest()[:16]}.so')
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_output(path) as tmp:
            subprocess.run([compiler, *COMPILE_FLAGS, '-o', tmp, SOURCE, *LINK_FLAGS], capture_output=True,
                           text=True, check=True)
    ctypes.CDLL(path)  # every symbol resolves (the vector math library has erff and expf)
    return path


@functools.lru_cache(maxsize=None)
def kernel_ops():
    """The (forward, with its bprop) custom op of the CPU kernel, or None where it cannot run."""
    if platform.system() != 'Linux':
        return None
    try:
        path = _build(os.environ.get('CXX', 'g++'))
        grad = ops.Custom(f'{path}:GeluErfGrad', out_shape=lambda x, dy: x, out_dtype=lambda x, dy: x,
                          func_type='aot')

        def bprop(x, out, dout):
            return (grad(x, dout),)

        return ops.Custom(f'{path}:GeluErf', out_shape=lambda x: x, out_dtype=lambda x: x, func_type='aot',
                          bprop=bprop)
    except (OSError, subprocess.CalledProcessError, TypeError, ValueError) as e:
        detail = getattr(e, 'stderr', None) or str(e)
        warnings.warn(f"mindspore_tnt: CPU GELU kernel unavailable, using MindSpore's GELU "
                      f"({detail.strip().splitlines()[-1] if detail.strip() else type(e).__name__})",
                      RuntimeWarning, stacklevel=2)
        return None


class GELU(nn.GELU):
    """``nn.GELU(approximate)``; the exact form with ``cpu_kernel=True`` runs fp32 inputs on the CPU kernel."""

    def __init__(self, approximate=False, cpu_kernel=False):
        super().__init__(approximate=approximate)
        self.kernel = kernel_ops() if cpu_kernel and not approximate else None

    def construct(self, x):
        if self.kernel is None or x.dtype != ms.float32:
            return super().construct(x)
        return self.kernel(x)
