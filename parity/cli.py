"""``tnt-parity``: run torch_ref and mindspore_tnt on the same weights and batch; report per block.

Prints the per-block table (inner and outer tokens), logits and top-k agreement, the
gradient summary and PASS/FAIL against the bounds of the chosen dtype; writes the same
as JSON and Markdown, and a PNG of error against depth. Exit status: 0 PASS, 1 FAIL,
2 bad input.
"""
import argparse
import os
import sys

from tnt_common.variants import list_models

DEFAULT_MODEL = 'tnt_s_patch16_224'


def parse_args(argv):
    ap = argparse.ArgumentParser(prog='tnt-parity', description=__doc__.split('\n')[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument('--model', choices=list_models(),
                    help=f'variant; default {DEFAULT_MODEL}, or detected from --checkpoint')
    ap.add_argument('--checkpoint', help='weights file in any layout tnt-convert reads (default: random weights)')
    ap.add_argument('--mode', default='graph', choices=('graph', 'pynative'), help='MindSpore execution mode')
    ap.add_argument('--dtype', default='fp32', choices=('fp32', 'amp', 'fp16'),
                    help='MindSpore precision: fp32 (O0), amp (O2: fp16 matmuls), fp16 (O3)')
    ap.add_argument('--batch-size', type=int, default=2)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--output-dir', default='parity-report', help='where the JSON, Markdown and PNG go')
    args = ap.parse_args(argv)
    if args.batch_size < 1:
        ap.error(f'--batch-size must be at least 1, got {args.batch_size}')
    if args.checkpoint and not os.path.isfile(args.checkpoint):
        ap.error(f'--checkpoint {args.checkpoint}: no such file')
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        ap.error(f'--output-dir {args.output_dir}: exists and is not a directory')
    if not args.checkpoint and args.model is None:
        args.model = DEFAULT_MODEL
    return args


def main(argv=None):
    args = parse_args(argv)
    from parity.report import build_report, format_text, write_outputs
    try:
        report = build_report(args.model, args.checkpoint, args.mode, args.dtype, args.batch_size, args.seed)
    except ValueError as e:  # convert.ConversionError included: unreadable or mismatched checkpoint
        print(f'tnt-parity: error: {e}', file=sys.stderr)
        return 2
    print(format_text(report))
    for path in write_outputs(report, args.output_dir):
        print(f'wrote {path}')
    return 0 if report['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
