"""``tnt-convert``: convert a TNT checkpoint between PyTorch and MindSpore, then verify it.

Reads every TNT family: timm (current and legacy), official Huawei PyTorch, mmpretrain
(published and mmengine training files), MindCV, the MindSpore model zoo and
mindspore_tnt (.pth/.pt/.pth.tar/.bin, .safetensors, .ckpt, Hugging Face hub folders), and
PyramidTNT: the official PyTorch state dict (BatchNorm statistics included) and mindspore_tnt's.
Writes MindSpore .ckpt/.safetensors (mindspore_tnt, mindcv or zoo layout) or torch
.pth/.safetensors (timm or official layout; mmpretrain: .pth and the other torch suffixes),
carrying the model's numerics, and verifies the written file. Bad input: a one-line error,
exit 2, no output file.

examples:
  tnt-convert model.safetensors tnt_s.ckpt                        # timm -> MindSpore
  tnt-convert tnt_s_patch16_224_ep138_acc_0.74.ckpt tnt_s.safetensors --to torch   # MindCV -> torch
  tnt-convert tnt_s.ckpt tnt_s_official.pth.tar --layout official   # back to the official layout
  tnt-convert tnt_b_converted_0.795.ckpt tnt_b.ckpt --numerics pytorch
  tnt-convert ptnt_s_82.0.pth.tar ptnt_s.ckpt                      # PyramidTNT -> MindSpore
"""
import sys

from convert.keymap import LAYOUTS
from tnt_common.cli import add_model, bad_input, end_on_sigterm, parser
from tnt_common.numerics import PRESETS


def _parser():
    ap = parser('tnt-convert', __doc__)
    ap.add_argument('input', help='checkpoint to read (never modified)')
    ap.add_argument('output', help='file to write: .ckpt, .safetensors, .pth, .pt, .bin or .pth.tar')
    ap.add_argument('--to', choices=('mindspore', 'torch'),
                    help='target framework (default: the other one than the input\'s)')
    ap.add_argument('--layout', choices=tuple(LAYOUTS),
                    help='family of the output, which also fixes its framework (default: timm names for '
                         'torch, mindspore_tnt names for MindSpore)')
    ap.add_argument('--numerics', metavar='|'.join(PRESETS),
                    help='GELU form and LayerNorm eps the weights are for, overriding what the file records '
                         'or its family implies (e.g. pytorch for MindCV\'s tnt_b_converted file); also '
                         'gelu=erf|tanh,norm_eps=X,final_norm_eps=Y')
    add_model(ap, 'variant (default: detected from shapes)')
    ap.add_argument('--num-classes', type=int, help='classifier size; a different one gets a fresh head, 0 removes it')
    ap.add_argument('--img-size', type=int, help='input size; patch_pos is resampled bicubically')
    ap.add_argument('--dtype', choices=('fp32', 'fp16', 'bf16'), default='fp32', help='stored dtype')
    ap.add_argument('--ema', action='store_true', help='take the EMA weights (state_dict_ema / model_ema, MindSpore ema.*)')
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
        f"numerics  {r['numerics']}; {r['numerics_origin']}",
    ]
    lines += [f'note      {n}' for n in r['notes']]
    names = 'mindspore_tnt names' if r['output_layout'] == 'mindspore' else f"{r['output_layout']} layout"
    lines += [
        f"output    {r['output']} ({r['target']}, {names}, {r['dtype']})",
        f"written   {r['tensors']} tensors, {r['params']:,} parameters, {_mb(r['output_bytes'])}",
        f"time      {r['convert_seconds']:.2f} s (read and check {r['read_seconds']:.2f} s, "
        f"write {r['write_seconds']:.2f} s)",
    ]
    v = r.get('verification')
    if v:
        lines.append(f"verify    output loaded strictly as {v['layout']}; {v['target']} model (from the output) "
                     f"vs {v['source']} model (from the "
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
    end_on_sigterm()
    args = _parser().parse_args(argv)
    if args.seed < 0:
        return bad_input('tnt-convert', f'--seed {args.seed} must not be negative')
    from convert.errors import ConversionError
    from convert.files import convert_file
    try:
        report = convert_file(args.input, args.output, to=args.to, layout=args.layout,
                              model_name=args.model, num_classes=args.num_classes,
                              img_size=args.img_size, dtype=args.dtype, ema=args.ema,
                              force=args.force, verify=args.verify, seed=args.seed,
                              progress=args.progress and sys.stderr.isatty(), numerics=args.numerics)
    except (ConversionError, OSError) as e:
        return bad_input('tnt-convert', e)
    print(format_report(report))
    return 0


if __name__ == '__main__':
    sys.exit(main())
