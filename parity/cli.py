"""``tnt-parity``: run torch_ref and mindspore_tnt on the same weights and batch, print the table."""
import argparse
import sys

from tnt_common.variants import list_models


def main(argv=None):
    ap = argparse.ArgumentParser(prog='tnt-parity', description=__doc__)
    ap.add_argument('--model', default='tnt_s_patch16_224', choices=list_models())
    ap.add_argument('--mode', default='graph', choices=('graph', 'pynative'))
    ap.add_argument('--batch-size', type=int, default=2)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)

    from parity.forward import FP32_BOUND, compare_outputs, describe_failure, run_variant
    from tnt_common.compare import format_rows
    report = compare_outputs(*run_variant(args.model, args.mode, args.batch_size, args.seed))
    print(f'{args.model}: MindSpore ({args.mode}) vs torch_ref, fp32, batch {args.batch_size}, '
          f'seed {args.seed}')
    print(format_rows(report['rows']))
    print(f"logits rel err {report['logits_rel']:.3e}, top-1 identical: {report['top1_same']}")
    print(f"{'PASS' if report['passed'] else 'FAIL'} (bound {FP32_BOUND:.0e}): {describe_failure(report)}")
    return 0 if report['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
