"""``tnt-parity``: run torch_ref and mindspore_tnt on the same weights and batch; report per block.

Prints the per-block table (inner and outer tokens; PyramidTNT's stem, blocks and merges),
logits and top-k agreement, the gradient summary and PASS/FAIL against the bounds of the chosen precision; writes the
same as JSON and Markdown, and a PNG of error against depth. Exit status: 0 PASS, 1 FAIL,
2 bad input (one line on stderr).

examples:
  tnt-parity --model tnt_s_patch16_224                      # random weights, GRAPH mode, fp32
  tnt-parity tnt_s_81.5.pth.tar --amp O2                    # a real file, fp16 matmuls
  tnt-parity --model tnt_tiny_patch16_64 --numerics mindcv --mode pynative
  tnt-parity --model ptnt_tiny_patch16_64                   # PyramidTNT: stem, every block, every merge
"""
import argparse
import os
import sys

from tnt_common.cli import Parser, add_model, bad_input, end_on_sigterm
from tnt_common.files import unwritable

DEFAULT_MODEL = 'tnt_s_patch16_224'
AMP_DTYPES = {'O0': 'fp32', 'O2': 'amp', 'O3': 'fp16'}  # the names of parity.precision.DTYPE_LEVELS


def parse_args(argv):
    ap = Parser(prog='tnt-parity', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model(ap, f'variant; default {DEFAULT_MODEL}, or detected from CHECKPOINT')
    ap.add_argument('checkpoint', nargs='?', metavar='CHECKPOINT',
                    help='weights: any file or hub folder tnt-convert reads (default: random weights)')
    ap.add_argument('--checkpoint', dest='checkpoint_flag', metavar='CHECKPOINT', help='the same, as a flag')
    ap.add_argument('--numerics', help="GELU form and LayerNorm eps of both models: pytorch, mindcv, zoo or "
                                       "gelu=erf|tanh,norm_eps=X,final_norm_eps=Y (default: the checkpoint's, "
                                       "else pytorch)")
    ap.add_argument('--mode', default='graph', choices=('graph', 'pynative'),
                    help='MindSpore execution mode (default graph)')
    ap.add_argument('--amp', default='O0', choices=tuple(AMP_DTYPES),
                    help='MindSpore mixed precision: O0 fp32 (default), O2 fp16 matmuls, O3 fp16')
    ap.add_argument('-b', '--batch-size', type=int, default=2, help='images in the batch (default 2)')
    ap.add_argument('--seed', type=int, default=0, help='seed of the random weights and batch (default 0)')
    ap.add_argument('--output-dir', default='parity-report',
                    help='where the JSON, Markdown and PNG go (default parity-report)')
    args = ap.parse_args(argv)
    if args.checkpoint and args.checkpoint_flag:
        ap.error(f'give the checkpoint once: CHECKPOINT {args.checkpoint} or --checkpoint {args.checkpoint_flag}')
    args.checkpoint = args.checkpoint or args.checkpoint_flag
    if args.batch_size < 1:
        ap.error(f'--batch-size must be at least 1, got {args.batch_size}')
    if not 0 <= args.seed < 2 ** 32:
        ap.error(f'--seed must be from 0 to 2**32 - 1, got {args.seed}')
    if args.checkpoint and not os.path.exists(args.checkpoint):
        ap.error(f'--checkpoint {args.checkpoint}: no such file')
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        ap.error(f'--output-dir {args.output_dir}: exists and is not a directory')
    if problem := unwritable(args.output_dir):   # before the run, not after it
        ap.error(f'--output-dir {args.output_dir}: {problem}')
    if not args.checkpoint and args.model is None:
        args.model = DEFAULT_MODEL
    return args


def main(argv=None):
    end_on_sigterm()
    args = parse_args(argv)
    from parity.report import build_report, format_text, write_outputs
    try:
        report = build_report(args.model, args.checkpoint, args.mode, AMP_DTYPES[args.amp], args.batch_size,
                              args.seed, args.numerics)
    except ValueError as e:  # convert.ConversionError included: unreadable or mismatched checkpoint
        return bad_input('tnt-parity', e)
    print(format_text(report))
    try:
        paths = write_outputs(report, args.output_dir)
    except OSError as e:
        return bad_input('tnt-parity', f'--output-dir {args.output_dir}: {e.filename}: {e.strerror}' if e.filename else e)
    for path in paths:
        print(f'wrote {path}')
    return 0 if report['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
