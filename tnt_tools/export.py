"""tnt-export: a TNT checkpoint as a MindIR or ONNX inference graph, verified by loading it back."""
import importlib.util
import os
import sys
import time
import warnings

from tnt_common.cli import parser
from tnt_common.compare import compare_logits
from tnt_common.files import atomic_output
from tnt_tools.common import DEVICES, BadInput, add_checkpoint_args, load, run, setup_mindspore

PROG = 'tnt-export'
ONNX_OPSET = 17
DOC = """\
Export a TNT checkpoint as an inference graph (image batch in, logits out), then load the
written file back and compare its logits with the checkpoint's model; the output appears
only if they agree within the fp32 parity bound (max|a-b|/max|b| <= 1e-5, same top-1).

The suffix of OUTPUT picks the format:
  .mindir  MindSpore MindIR of mindspore_tnt built with impl='standard' (Conv2d, nn.GELU:
           no custom operator, loadable on CPU, GPU and Ascend); checked with
           mindspore.nn.GraphCell(mindspore.load(OUTPUT)) against the mindspore_tnt model
  .onnx    ONNX (opset 17) of torch_ref, by torch.onnx.export's TorchScript exporter
           (dynamo=False); checked with onnxruntime against the torch_ref model

The graph computes the checkpoint's numerics (GELU form, LayerNorm eps), or --numerics.

examples:
  tnt-export tnt_s_patch16_224.safetensors tnt_s.mindir
  tnt-export tnt_s_patch16_224.safetensors tnt_s.onnx --dynamic-batch
  tnt-export tnt_s_patch16_224_ep138_acc_0.74.ckpt tnt_s_mindcv.onnx -b 8 --img-size 384
"""
FORMATS = {'.mindir': 'MindIR', '.onnx': 'ONNX'}


def build_parser():
    ap = parser(PROG, DOC)
    add_checkpoint_args(ap)
    ap.add_argument('output', metavar='OUTPUT', help='the graph file: NAME.mindir or NAME.onnx')
    ap.add_argument('-b', '--batch-size', type=int, default=1, help='batch of the exported input (default 1)')
    ap.add_argument('--dynamic-batch', action='store_true',
                    help='leave the batch dimension free (verified at two batch sizes)')
    ap.add_argument('--device', choices=DEVICES, default='auto',
                    help='MindSpore device for .mindir (auto: Ascend, then GPU, then CPU); ONNX runs on CPU')
    ap.add_argument('--force', action='store_true', help='overwrite an existing OUTPUT')
    return ap


def check_args(args):
    """The output format, or ``BadInput`` for arguments that need no checkpoint to refuse."""
    fmt = next((v for k, v in FORMATS.items() if args.output.lower().endswith(k)), None)   # '.onnx' alone too
    if fmt is None:
        raise BadInput(f'{args.output}: unknown format; the suffix must be {" or ".join(FORMATS)}')
    if args.batch_size < 1:
        raise BadInput(f'--batch-size must be >= 1, got {args.batch_size}')
    if args.img_size is not None and args.img_size < 1:
        raise BadInput(f'--img-size must be positive, got {args.img_size}')
    missing = [m for m in ('onnx', 'onnxruntime') if fmt == 'ONNX' and importlib.util.find_spec(m) is None]
    if missing:
        raise BadInput(f"{args.output}: ONNX export needs {' and '.join(missing)}: pip install 'mindspore-tnt[export]'")
    if os.path.isdir(args.output):
        raise BadInput(f'{args.output}: is a directory')
    if os.path.exists(args.output) and not args.force:
        raise BadInput(f'{args.output}: exists; pass --force to overwrite it')
    out_dir = os.path.dirname(args.output)
    if out_dir and not os.path.isdir(out_dir):
        raise BadInput(f'{out_dir}: no such directory')
    return fmt


def export_model(source, variant, img_size, fmt):
    """The model to write: for MindIR the source's parameters in ``impl='standard'``, for ONNX the source."""
    if fmt == 'ONNX':
        return source
    import mindspore_tnt
    from convert.transfer import mindspore_to_numpy, numpy_to_mindspore
    net = mindspore_tnt.create_model(variant, num_classes=source.num_classes, img_size=img_size, impl='standard',
                                     **source.numerics.model_kwargs())
    numpy_to_mindspore(mindspore_to_numpy(source), net)
    net.set_train(False)
    return net


def write_mindir(net, path, shape):
    """MindIR of ``net`` at ``path``, which must end in ``.mindir``; a ``None`` batch in ``shape`` is dynamic."""
    import mindspore as ms
    from tnt_train.model import write_mindir as write
    write(net, path, ms.Tensor(shape=list(shape), dtype=ms.float32))


def write_onnx(model, path, shape):
    """ONNX of a torch model at ``path``; a ``None`` batch in ``shape`` becomes the dynamic axis ``batch``."""
    import torch
    x = torch.zeros([d or 1 for d in shape])
    dynamic = {'input': {0: 'batch'}, 'logits': {0: 'batch'}} if shape[0] is None else None
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen deliberately (no onnxscript, dynamic batch by tracing); its
        # deprecation notices and the tracer's note that the input size check is constant (the graph has
        # a fixed image size) say nothing about this export, whose verification follows.
        warnings.simplefilter('ignore', DeprecationWarning)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=ONNX_OPSET, input_names=['input'],
                          output_names=['logits'], dynamic_axes=dynamic)


WRITERS = {'MindIR': write_mindir, 'ONNX': write_onnx}


def graph_runner(fmt, path):
    """``f(batch) -> logits`` running the written file the way its users load it."""
    if fmt == 'MindIR':
        import mindspore as ms
        cell = ms.nn.GraphCell(ms.load(path))
        return lambda x: cell(ms.Tensor(x)).asnumpy()
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def source_runner(fmt, model):
    """``f(batch) -> logits`` of the checkpoint's model in memory."""
    if fmt == 'MindIR':
        import mindspore as ms
        return lambda x: model(ms.Tensor(x)).asnumpy()
    import torch

    def forward(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    return forward


def compare(test, ref):
    """One verification row: the written graph's logits ``test`` against the source model's ``ref``."""
    if test.shape != ref.shape:
        raise VerificationFailed(f'the graph returned logits of shape {test.shape}, expected {ref.shape}')
    return dict(batch=len(ref), **compare_logits(test, ref))


def export(args, fmt):
    """Write the graph to a temporary file beside OUTPUT, verify it, then rename it; returns the report."""
    from tnt_common.fixtures import make_batch
    framework = 'mindspore' if fmt == 'MindIR' else 'torch'
    if fmt == 'MindIR':
        setup_mindspore(args.device)
    source, can = load(args, framework)
    size = args.img_size or can.img_size
    batches = [make_batch(args.batch_size, size)]
    if args.dynamic_batch:
        batches.append(make_batch(args.batch_size + 1, size, seed=1))
    ref = [source_runner(fmt, source)(x) for x in batches]
    shape = (None if args.dynamic_batch else args.batch_size, 3, size, size)
    suffix = next(k for k, v in FORMATS.items() if v == fmt)   # ms.export appends '.mindir' otherwise
    with atomic_output(args.output, suffix=suffix) as tmp:
        t0 = time.perf_counter()
        WRITERS[fmt](export_model(source, can.variant, size, fmt), tmp, shape)
        t1 = time.perf_counter()
        runner = graph_runner(fmt, tmp)
        checks = [compare(runner(x), r) for x, r in zip(batches, ref)]
        t2 = time.perf_counter()
        report = dict(checkpoint=args.checkpoint, variant=can.variant, num_classes=source.num_classes,
                      img_size=size, outputs=ref[0].shape[1], numerics=can.numerics.describe(), format=fmt,
                      output=args.output, shape=shape, bytes=os.path.getsize(tmp), export_seconds=t1 - t0,
                      verify_seconds=t2 - t1, checks=checks, passed=all(c['passed'] for c in checks))
        print(format_report(report))
        if not report['passed']:
            raise VerificationFailed(describe_failure(checks))
    return report


class VerificationFailed(RuntimeError):
    """The written graph does not compute the checkpoint's model: nothing is left behind."""


def describe_failure(checks):
    from tnt_common.compare import FP32_BOUND
    c = next(c for c in checks if not c['passed'])
    return (f"verification failed at batch {c['batch']}: logits rel err {c['rel']:.3e} "
            f"(bound {FP32_BOUND:.0e}), top-1 identical: {c['top1_same']}; no output written")


def format_report(r):
    from tnt_common.compare import FP32_BOUND
    source = 'mindspore_tnt' if r['format'] == 'MindIR' else 'torch_ref'
    how = ("mindspore_tnt impl='standard'" if r['format'] == 'MindIR'
           else f'torch_ref, opset {ONNX_OPSET}, TorchScript exporter')
    loader = 'mindspore.nn.GraphCell(mindspore.load(...))' if r['format'] == 'MindIR' else 'onnxruntime'
    dims = ', '.join('batch' if d is None else str(d) for d in r['shape'])
    lines = [
        f"model     {r['variant']} ({r['num_classes']} classes, {r['img_size']}x{r['img_size']}) "
        f"from {r['checkpoint']}",
        f"numerics  {r['numerics']}",
        f"output    {r['output']} ({r['format']}, from {how}), {r['bytes']:,} bytes, {r['export_seconds']:.2f} s",
        f"input     float32 ({dims}) -> ({dims.split(',')[0]}, {r['outputs']})",
        f'verify    {loader} vs {source} (from the checkpoint):',
    ]
    lines += [f"          batch {c['batch']}: logits max|d| {c['max_abs']:.3e}, rel {c['rel']:.3e} "
              f"(bound {FP32_BOUND:.0e}), top-1 identical: {c['top1_same']}" for c in r['checks']]
    lines.append(f"          {'PASS' if r['passed'] else 'FAIL'} in {r['verify_seconds']:.2f} s")
    return '\n'.join(lines)


def _main(argv=None):
    args = build_parser().parse_args(argv)
    fmt = check_args(args)
    try:
        export(args, fmt)
    except VerificationFailed as e:
        print(f'{PROG}: error: {e}', file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    return run(PROG, _main, argv)


if __name__ == '__main__':
    sys.exit(main())
