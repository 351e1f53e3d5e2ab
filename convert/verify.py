"""Verification of a written checkpoint: strict loading in its own layout, then a forward pass.

The output is loaded the way its family's own code loads it, strictly, into a model
that has that layout's names and shapes (a PyramidTNT's: ``layouts.pyramid_shapes``, its
BatchNorm statistics included, compared in eval mode) (``layouts.stored_shapes``, written from the
layout descriptions, not from ``keymap``): ``ms.load_checkpoint`` +
``load_param_into_net(strict_load=True)`` for MindSpore files, ``load_state_dict(strict=True)``
for torch files (mmpretrain's under ``state_dict``, as mmengine reads them), into a module
holding exactly that layout's tensors; their values then pass through ``keymap`` into our
model of the target framework, built with the numerics the file records (or its family
implies), which must be the intended ones. The source weights go into the source
framework's model with the intended numerics; both run
``tnt_common.fixtures.make_batch(2, img_size)`` (MindSpore in PyNative mode on the caller's
device; the caller's mode is restored); the check passes when
``max|target - source| / max|source| <= FP32_BOUND`` for the logits (and every stage),
with identical top-1.

With fp16/bf16 output the source model holds the source weights rounded to that dtype
(exactly the values the file holds, computed in fp32 by both models), so the fp32 bound
applies unchanged and measures the conversion and the frameworks, not the rounding. The
rounding's own effect (rounded vs original weights, one framework) is reported beside it,
without a bound: it is a property of the chosen dtype, not a conversion error.
"""
import numpy as np

from convert import readers
from convert.canonical import resolve_numerics, to_timm
from convert.dtypes import rounded
from convert.errors import ConversionError, needs_torch
from convert.keymap import LAYOUTS
from convert.layouts import stored_shapes
from convert.pyramid import to_canonical
from convert.writers import MINDSPORE, PYTORCH, SAFETENSORS, container
from tnt_common.compare import FP32_BOUND, compare_logits, compare_outputs, describe_failure
from tnt_common.fixtures import make_batch
from tnt_common.pyramid import stage_names
from tnt_common.strict import check_strict
from tnt_common.variants import PYRAMID_VARIANTS, family


def _check_stored(path, how, expected, got):
    """``ConversionError`` unless the stored ``{name: shape}`` ``got`` is exactly ``expected``."""
    try:
        check_strict(expected, got, f'{path}: {how} failed')
    except (KeyError, ValueError) as e:
        raise ConversionError(e.args[0]) from None


def _read_mindspore(path):
    """{name: fp32 Parameter} as ``ms.load_checkpoint`` reads the file (string entries left out)."""
    import mindspore as ms
    params = ms.load_checkpoint(path, format='safetensors' if container(path)[0] == SAFETENSORS else 'ckpt')
    return {k: ms.Parameter(v.astype(ms.float32), name=k) if v.dtype != ms.float32 else v
            for k, v in params.items() if isinstance(v, ms.Parameter)}


def _read_torch(path, layout):
    """The state dict as the layout's own code takes it from the file."""
    import torch
    if container(path)[0] == SAFETENSORS:
        from safetensors.torch import load_file
        return load_file(path)
    obj = torch.load(path, map_location='cpu', weights_only=True)
    if 'state_dict' in obj and not isinstance(obj['state_dict'], torch.Tensor):
        if layout not in ('timm', 'mmpretrain'):
            raise ConversionError(f'{path}: the {layout} layout is a plain state dict, found a wrapper')
        return obj['state_dict']
    return obj


def _holder_cell(shapes):
    """A Cell whose parameters carry exactly these names and shapes."""
    import mindspore as ms
    cell = ms.nn.Cell()
    cell.held = ms.ParameterTuple([ms.Parameter(ms.ops.zeros(s, ms.float32), name=k) for k, s in shapes.items()])
    return cell


def _holder_module(shapes):
    """A torch module whose state dict has exactly these keys and shapes."""
    import torch
    root = torch.nn.Module()
    for k, s in shapes.items():
        *path, leaf = k.split('.')
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, torch.nn.Parameter(torch.zeros(s)))
    return root


def _load_output(path, target, layout, variant, nc, size):
    """{stored name: fp32 array} of the written file, after a strict load in its own layout."""
    shapes = stored_shapes(layout, variant, nc, size)
    if target == MINDSPORE:
        import mindspore as ms
        params = _read_mindspore(path)
        how = f'MindSpore strict load as {layout}'
        _check_stored(path, how, shapes, {k: p.shape for k, p in params.items()})
        holder = _holder_cell(shapes)
        not_loaded, unused = ms.load_param_into_net(holder, params, strict_load=True)
        if not_loaded or unused:
            raise ConversionError(f'{path}: {how} failed: not loaded {not_loaded[:4]}, unused {unused[:4]}')
        return {p.name: p.asnumpy() for p in holder.held}
    state = _read_torch(path, layout)
    how = f'torch strict load as {layout}'
    _check_stored(path, how, shapes, {k: v.shape for k, v in state.items()})
    holder = _holder_module(shapes)
    try:
        holder.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        raise ConversionError(f'{path}: {how} failed: {" ".join(str(e).split())}') from None
    return {k: v.detach().numpy() for k, v in holder.state_dict().items()}


def _model(framework, variant, nc, size, numerics, arrays):
    from convert.transfer import model_io
    create_model, _, load = model_io(framework, family(variant))
    return load(arrays, create_model(variant, num_classes=nc, img_size=size, weight_init='skip',
                                     **numerics.model_kwargs()))


def _outputs(framework, model, x):
    if framework == MINDSPORE:
        from mindspore_tnt.outputs import mindspore_outputs
        return mindspore_outputs(model, x)
    from torch_ref.outputs import torch_outputs
    return torch_outputs(model, x)


def verify(path, arrays, source, target, layout, variant, nc, size, numerics, dtype='fp32', step=None):
    """Compare the written file ``path`` with the hub ``arrays`` it was written from.

    ``source``/``target``: frameworks ('mindspore' or 'torch'); ``layout``: the written
    family; both models compute with ``numerics``. ``step()`` is called after each of the
    ``steps(dtype)`` phases. Returns a report dict; ``passed`` is the verdict.
    """
    from mindspore_tnt.context import execution
    if LAYOUTS[layout].framework != target:
        raise ConversionError(f'the {layout} layout is not a {target} layout')
    if PYTORCH in (source, target):
        needs_torch('the check against torch_ref (--no-verify skips it)')
    with execution('pynative'):
        return _verify(path, arrays, source, target, layout, variant, nc, size, numerics, dtype,
                       step or (lambda: None))


def _verify(path, arrays, source, target, layout, variant, nc, size, numerics, dtype, step):
    expected = {k: rounded(v, dtype) for k, v in arrays.items()}
    stored = _load_output(path, target, layout, variant, nc, size)
    pyramid = family(variant) == 'ptnt'
    if pyramid:
        loaded = to_canonical(stored, variant).arrays
    else:
        loaded = stored if layout == 'timm' else to_timm(stored, variant).arrays
    recorded, _ = resolve_numerics(LAYOUTS[layout], readers.read(path).numerics, None)
    target_model = _model(target, variant, nc, size, recorded, loaded)
    mismatch = [k for k in expected if k not in loaded or not np.array_equal(loaded[k], expected[k])]
    step()
    x = make_batch(2, size, seed=0)
    source_model = _model(source, variant, nc, size, numerics, expected)
    step()
    ref = _outputs(source, source_model, x)
    step()
    test = _outputs(target, target_model, x)
    step()
    report = compare_outputs(test, ref, names=stage_names(PYRAMID_VARIANTS[variant]['depths']) if pyramid else None)
    report.update(bound=FP32_BOUND, batch=x.shape[0], exact_mismatch=mismatch, source=source, target=target,
                  dtype=dtype, layout=layout, numerics_recorded=recorded.describe())
    report['passed'] = report['passed'] and not mismatch and recorded == numerics
    if recorded != numerics:
        report['verdict'] = f'the file records numerics {recorded.describe()}, intended {numerics.describe()}'
    elif mismatch:
        report['verdict'] = f'{len(mismatch)} tensors differ from the intended values, first {mismatch[0]}'
    else:
        report['verdict'] = describe_failure(report)
    if dtype != 'fp32':
        original = _model(source, variant, nc, size, numerics, arrays)
        rounding = compare_logits(ref[0], _outputs(source, original, x)[0])
        report['rounding'] = dict(logits_rel=rounding['rel'], top1_same=rounding['top1_same'])
        step()
    return report


def steps(dtype):
    """Number of phases ``verify`` reports through ``step``."""
    return 4 if dtype == 'fp32' else 5
