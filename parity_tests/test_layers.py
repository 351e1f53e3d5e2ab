"""The packages form layers and imports only point down (docs/architecture.md).

``tnt_common`` <- the models (``torch_ref``, ``mindspore_tnt``) <- ``convert`` (with the
models' package ``__init__``s, whose ``create_model`` loads checkpoints) <- ``parity`` / ``tnt_train`` <-
``bench`` and the commands (``tnt_tools``, ``train_ascend.py``, ``parity.cli``, ``convert.cli``).
Every import counts, the ones inside functions too. Also here: ``convert`` converts and
verifies without ``parity``, and verification leaves its caller's MindSpore mode and device
as they were.
"""
import ast
import contextlib
import os
import subprocess
import sys
import textwrap
import tomllib

import mindspore as ms
import pytest
from safetensors.numpy import save_file

from parity_tests.helpers import ROOT, TINY, Command, env, random_state, started

# The layer of every module of a package, lowest first ...
PACKAGES = {'tnt_common': 0, 'torch_ref': 1, 'mindspore_tnt': 1, 'convert': 2, 'parity': 3, 'tnt_train': 3,
            'bench': 4, 'tnt_tools': 4, 'train_ascend': 4}
# ... except these modules (a package's own name is its __init__).
MODULES = {'torch_ref': 2, 'mindspore_tnt': 2, 'convert.cli': 4, 'parity.cli': 4, 'parity.__main__': 4}
LAYER_NAMES = ('tnt_common', 'models', 'convert', 'parity/tnt_train', 'bench/commands')


def layer(module):
    """The layer of a dotted module name, or None outside the project."""
    return MODULES.get(module, PACKAGES.get(module.split('.')[0]))


def is_module(name):
    """Whether the dotted ``name`` is a module or package of the project (not a name inside one)."""
    path = os.path.join(ROOT, *name.split('.'))
    return os.path.isfile(path + '.py') or os.path.isfile(os.path.join(path, '__init__.py'))


def imported_modules(tree, module, is_package):
    """(line, module) of every import in ``tree``, at any depth; ``from A import b`` names ``A.b`` if that
    is a module, else ``A``."""
    package = module if is_package else module.rpartition('.')[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f'{base}.{alias.name}'
                yield node.lineno, full if is_module(full) else base


def violations(source, module, is_package=False):
    """'module:line imports target (layer -> layer)' for every import of a higher layer."""
    own = layer(module)
    found = []
    for line, target in dict.fromkeys(imported_modules(ast.parse(source), module, is_package)):
        theirs = layer(target)
        if theirs is not None and theirs > own:
            found.append(f'{module}:{line} imports {target} ({LAYER_NAMES[own]} -> {LAYER_NAMES[theirs]})')
    return found


def project_files():
    """(path, module, is_package) of every .py file of the packages, and train_ascend.py."""
    yield os.path.join(ROOT, 'train_ascend.py'), 'train_ascend', False
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for f in sorted(files):
                if f.endswith('.py'):
                    parts = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].split(os.sep)
                    is_package = parts[-1] == '__init__'
                    yield os.path.join(folder, f), '.'.join(parts[:-1] if is_package else parts), is_package


def test_every_installed_package_has_a_layer():
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        setup = tomllib.load(f)['tool']['setuptools']
    assert set(setup['packages']) | set(setup['py-modules']) <= set(PACKAGES)


def test_imports_point_down():
    files = list(project_files())
    assert len(files) > 50
    found = []
    for path, module, is_package in files:
        with open(path) as f:
            found += violations(f.read(), module, is_package)
    assert not found, 'imports that point up:\n' + '\n'.join(found)


@pytest.mark.parametrize('module, is_package, source, target', [
    ('convert.verify', False, 'def f():\n    from parity.forward import set_mode\n', 'parity.forward'),
    ('mindspore_tnt.tnt', False, 'from mindspore_tnt import create_model\n', 'mindspore_tnt'),
    ('torch_ref.tnt', False, 'import convert.api\n', 'convert.api'),
    ('tnt_common.compare', False, 'from torch_ref import tnt\n', 'torch_ref.tnt'),
    ('tnt_train.loop', False, 'from tnt_tools.common import load\n', 'tnt_tools.common'),
    ('convert', True, 'from . import cli\n', 'convert.cli'),
])
def test_checker_catches_a_planted_upward_import(module, is_package, source, target):
    found = violations(source, module, is_package)
    assert len(found) == 1 and f' imports {target} ' in found[0], found


def test_checker_allows_own_layer_and_below():
    assert violations('from tnt_train.optim import create_optimizer\nimport convert.transfer\n',
                      'parity.train_step') == []
    assert violations('from mindspore_tnt.tnt import create_model\n', 'convert.api') == []
    assert violations('from convert.api import create_model\n', 'torch_ref') == []


# --- convert without parity ---

BLOCK_PARITY = '''
import sys


class NoParity:
    """Makes ``parity`` unimportable, as in an installation without it."""

    def find_spec(self, name, path=None, target=None):
        if name == 'parity' or name.startswith('parity.'):
            raise ImportError(f'{name} is not available')


sys.meta_path.insert(0, NoParity())
'''


def start_commands(tmp_path_factory):
    """The conversion with verification of a tnt_tiny file, ``parity`` blocked: queued at the start
    of the session."""
    d = tmp_path_factory.mktemp('layers_no_parity')
    src, out = d / 'tiny.safetensors', d / 'tiny.ckpt'
    save_file(random_state(TINY), str(src))
    return out, Command([sys.executable, '-c', BLOCK_PARITY + textwrap.dedent(f'''
        from convert import convert_file
        report = convert_file({str(src)!r}, {str(out)!r})
        assert report['verification']['passed'], report['verification']['verdict']
        assert not [m for m in sys.modules if m == 'parity' or m.startswith('parity.')]
        print('converted and verified')
    ''')], timeout=600)


@pytest.fixture(scope='module')
def tiny_file(tmp_path_factory):
    """A timm safetensors file of random tnt_tiny weights."""
    path = tmp_path_factory.mktemp('layers') / 'tiny.safetensors'
    save_file(random_state(TINY), str(path))
    return path


def test_convert_imports_and_verifies_without_parity(tmp_path_factory):
    out, command = started(start_commands, tmp_path_factory)
    p = command.result(check=False)
    assert p.returncode == 0 and 'converted and verified' in p.stdout, p.stderr[-3000:]
    assert out.is_file()


def test_the_parity_block_is_effective():
    p = subprocess.run([sys.executable, '-c', BLOCK_PARITY + 'import parity.forward\n'], capture_output=True,
                       text=True, env=env(), cwd=ROOT, timeout=600)
    assert p.returncode != 0 and 'ImportError: parity is not available' in p.stderr, p.stderr[-3000:]


# --- the caller's MindSpore context ---

@pytest.fixture
def graph_caller():
    """A caller running in GRAPH mode; its previous mode comes back afterwards."""
    before = ms.get_context('mode')
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=before)


@pytest.fixture
def device_calls(monkeypatch):
    """Every ``ms.set_device`` call made from now on."""
    calls, real = [], ms.set_device
    monkeypatch.setattr(ms, 'set_device', lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def leaks(src, tmp_path, device_calls):
    """What a verified conversion changed in its caller's MindSpore context: [] when nothing."""
    from convert import convert_file
    before = ms.get_context('mode'), ms.get_context('device_target')
    report = convert_file(src, tmp_path / 'out.ckpt')
    assert report['verification']['passed'], report['verification']['verdict']
    after = ms.get_context('mode'), ms.get_context('device_target')
    return ([f'mode, device {before} became {after}'] if after != before else []) + \
        ([f'ms.set_device called with {device_calls}'] if device_calls else [])


def test_verification_keeps_the_callers_mode_and_device(graph_caller, device_calls, tiny_file, tmp_path):
    assert leaks(tiny_file, tmp_path, device_calls) == []


def test_planted_leak_of_the_verification_mode_is_caught(graph_caller, device_calls, tiny_file, tmp_path,
                                                         monkeypatch):
    from mindspore_tnt import context

    @contextlib.contextmanager
    def not_restoring(mode):
        context.select(mode)
        yield
    monkeypatch.setattr(context, 'execution', not_restoring)
    assert leaks(tiny_file, tmp_path, device_calls) == ["mode, device (0, 'CPU') became (1, 'CPU')"]


def test_planted_device_choice_is_caught(graph_caller, device_calls, tiny_file, tmp_path, monkeypatch):
    from mindspore_tnt import context
    restoring = context.execution

    @contextlib.contextmanager
    def choosing_cpu(mode):
        with restoring(mode):
            context.select(device='CPU')
            yield
    monkeypatch.setattr(context, 'execution', choosing_cpu)
    assert leaks(tiny_file, tmp_path, device_calls) == ["ms.set_device called with [('CPU',)]"]


def test_execution_restores_the_mode_after_an_exception(graph_caller):
    from mindspore_tnt.context import execution
    with pytest.raises(RuntimeError, match='inside'):
        with execution('pynative'):
            assert ms.get_context('mode') == ms.PYNATIVE_MODE
            raise RuntimeError('inside')
    assert ms.get_context('mode') == ms.GRAPH_MODE
