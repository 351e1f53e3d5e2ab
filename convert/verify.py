"""Verification of a written checkpoint: strict loading and a forward-pass comparison.

The output is loaded into the target framework's model with that framework's own loader
(``ms.load_checkpoint`` + ``load_param_into_net(strict_load=True)``; torch
``load_state_dict(strict=True)``; the official layout through ``readers``, as no official
model exists here). The source weights go into the source framework's model. Both run
``parity.forward.make_batch(2, img_size)``; the check passes when
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
from convert.canonical import OFFICIAL, to_timm
from convert.dtypes import rounded
from convert.errors import ConversionError
from convert.writers import MINDSPORE, SAFETENSORS, container
from parity.forward import FP32_BOUND, compare_outputs, describe_failure, make_batch
from tnt_common.compare import max_abs_err, rel_err


def _mindspore_model(variant, nc, size, arrays=None, path=None):
    import mindspore as ms
    import mindspore_tnt
    from convert.transfer import numpy_to_mindspore
    net = mindspore_tnt.create_model(variant, num_classes=nc, img_size=size)
    if arrays is not None:
        return numpy_to_mindspore(arrays, net)
    params = ms.load_checkpoint(path, format='safetensors' if container(path)[0] == SAFETENSORS else 'ckpt')
    params = {k: ms.Parameter(v.astype(ms.float32), name=k) if v.dtype != ms.float32 else v
              for k, v in params.items()}
    not_loaded, unused = ms.load_param_into_net(net, params, strict_load=True)
    if not_loaded or unused:
        raise ConversionError(f'{path}: MindSpore strict load failed: not loaded {not_loaded[:5]}, '
                              f'unused {unused[:5]}')
    return net


def _torch_model(variant, nc, size, arrays=None, path=None):
    import torch
    import torch_ref
    from convert.transfer import numpy_to_torch
    model = torch_ref.create_model(variant, num_classes=nc, img_size=size)
    if arrays is not None:
        return numpy_to_torch(arrays, model)
    if container(path)[0] == SAFETENSORS:
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = torch.load(path, map_location='cpu', weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model


def _outputs(framework, model, x):
    from parity.forward import mindspore_outputs, torch_outputs
    return (mindspore_outputs if framework == MINDSPORE else torch_outputs)(model, x)


def _params(framework, model):
    from convert.transfer import mindspore_to_numpy, torch_to_numpy
    return (mindspore_to_numpy if framework == MINDSPORE else torch_to_numpy)(model)


def verify(path, arrays, source, target, layout, variant, nc, size, dtype='fp32', step=None):
    """Compare the written file ``path`` with the hub ``arrays`` it was written from.

    ``source``/``target``: frameworks ('mindspore' or 'torch'); ``step()`` is called after
    each of the ``steps(dtype)`` phases. Returns a report dict; ``passed`` is the verdict.
    """
    from parity.forward import set_mode
    step = step or (lambda: None)
    set_mode('pynative')
    build = {MINDSPORE: _mindspore_model, 'torch': _torch_model}
    expected = {k: rounded(v, dtype) for k, v in arrays.items()}
    if layout == OFFICIAL:  # no official model: read back through the readers
        can = to_timm(readers.read(path).arrays, variant)
        target_model = build[target](variant, nc, size, arrays=can.arrays)
    else:
        target_model = build[target](variant, nc, size, path=path)
    loaded = _params(target, target_model)
    mismatch = [k for k in expected if not np.array_equal(loaded[k], expected[k])]
    step()
    x = make_batch(2, size, seed=0)
    source_model = build[source](variant, nc, size, arrays=expected)
    step()
    ref = _outputs(source, source_model, x)
    step()
    test = _outputs(target, target_model, x)
    step()
    report = compare_outputs(test, ref)
    report.update(bound=FP32_BOUND, batch=x.shape[0], logits_max_abs=max_abs_err(test[0], ref[0]),
                  exact_mismatch=mismatch, source=source, target=target, dtype=dtype)
    report['passed'] = report['passed'] and not mismatch
    report['verdict'] = describe_failure(report) if not mismatch else \
        f'{len(mismatch)} tensors differ from the intended values, first {mismatch[0]}'
    if dtype != 'fp32':
        original = build[source](variant, nc, size, arrays=arrays)
        full = _outputs(source, original, x)[0]
        report['rounding'] = dict(logits_rel=rel_err(ref[0], full),
                                  top1_same=bool(np.all(ref[0].argmax(-1) == full.argmax(-1))))
        step()
    return report


def steps(dtype):
    """Number of phases ``verify`` reports through ``step``."""
    return 4 if dtype == 'fp32' else 5
