"""``tnt-convert``: convert a TNT checkpoint between PyTorch and MindSpore, then verify it.

Reads timm (current and legacy), official Huawei PyTorch and mindspore_tnt checkpoints
(.pth/.pt/.pth.tar/.bin, .safetensors, .ckpt); writes MindSpore .ckpt/.safetensors or
torch .pth/.safetensors (timm or official layout). Bad input: a one-line error, exit 1,
no output file.
"""
import argparse
import sys

from tnt_common.variants import list_models

EXIT_ERROR = 1


def _parser():
    ap = argparse.ArgumentParser(prog='tnt-convert', description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('input', help='checkpoint to read (never modified)')
    ap.add_argument('output', help='file to write: .ckpt, .safetensors, .pth, .pt, .bin or .pth.tar')
    ap.add_argument('--to', choices=('mindspore', 'torch'),
                    help='target framework (default: the other one than the input\'s)')
    ap.add_argument('--layout', choices=('timm', 'official'), default='timm',
                    help='key layout of a torch output (default timm)')
    ap.add_argument('--model', choices=list_models(), help='variant (default: detected from shapes)')
    ap.add_argument('--num-classes', type=int, help='classifier size; a different one gets a fresh head, 0 removes it')
    ap.add_argument('--img-size', type=int, help='input size; patch_pos is resampled bicubically')
    ap.add_argument('--dtype', choices=('fp32', 'fp16', 'bf16'), default='fp32', help='stored dtype')
    ap.add_argument('--ema', action='store_true', help='take the EMA weights of a torch checkpoint')
    ap.add_argument('--force', action='store_true', help='overwrite an existing output')
    ap.add_argument('--no-verify', dest='verify', action='store_false',
                    help='skip loading both models and comparing their logits')
    ap.add_argument('--seed', type=int, default=0, help='seed of a freshly initialised head')
    ap.add_argument('--no-progress', dest='progress', action='store_false', help='no progress bar')
    return ap


def _mb(n):
    return f'{n:,} bytes ({n / 2 ** 20:.1f} MiB)'


def format_report(r):
    lines = [
        f"input     {r['input']} ({r['input_format']}, {_mb(r['input_bytes'])})",
        f"layout    {r['layout']}",
        f"variant   {r['variant']} ({r['num_classes']} classes, {r['img_size']}x{r['img_size']})",
    ]
    lines += [f'note      {n}' for n in r['notes']]
    names = 'mindspore_tnt names' if r['target'] == 'mindspore' else f"{r['output_layout']} layout"
    lines += [
        f"output    {r['output']} ({r['target']}, {names}, {r['dtype']})",
        f"written   {r['tensors']} tensors, {r['params']:,} parameters, {_mb(r['output_bytes'])}",
        f"time      {r['convert_seconds']:.2f} s (read and check {r['read_seconds']:.2f} s, "
        f"write {r['write_seconds']:.2f} s)",
    ]
    v = r.get('verification')
    if v:
        lines.append(f"verify    {v['target']} model (from the output) vs {v['source']} model (from the "
                     f"input{', rounded to ' + v['dtype'] if v['dtype'] != 'fp32' else ''}), batch {v['batch']}:")
        lines.append(f"          logits max|d| {v['logits_max_abs']:.3e}, rel {v['logits_rel']:.3e} "
                     f"(bound {v['bound']:.0e}), top-1 identical: {v['top1_same']}, tensors exact: "
                     f"{not v['exact_mismatch']}")
        if 'rounding' in v:
            lines.append(f"          {v['dtype']} rounding itself moves the logits by rel "
                         f"{v['rounding']['logits_rel']:.3e} (top-1 unchanged: {v['rounding']['top1_same']}; "
                         'informative, no bound)')
        lines.append(f"          {'PASS' if v['passed'] else 'FAIL'} in {v['seconds']:.2f} s")
    else:
        lines.append('verify    skipped (--no-verify)')
    return '\n'.join(lines)


def main(argv=None):
    args = _parser().parse_args(argv)
    from convert.errors import ConversionError
    from convert.files import convert_file
    try:
        report = convert_file(args.input, args.output, to=args.to, layout=args.layout,
                              model_name=args.model, num_classes=args.num_classes,
                              img_size=args.img_size, dtype=args.dtype, ema=args.ema,
                              force=args.force, verify=args.verify, seed=args.seed,
                              progress=args.progress)
    except (ConversionError, OSError) as e:
        print(f'tnt-convert: error: {" ".join(str(e).split())}', file=sys.stderr)
        return EXIT_ERROR
    print(format_report(report))
    return 0


if __name__ == '__main__':
    sys.exit(main())
