"""Train TNT with MindSpore on Ascend, GPU or CPU; one device, or data-parallel under msrun.

    python train_ascend.py                      # tnt_tiny on scikit-learn's digits, CPU, minutes
    python train_ascend.py --data /imagenet     # the official recipe (DESIGN.md §5), tnt_s_patch16_224
    msrun --worker_num=8 --local_worker_num=8 train_ascend.py --data /imagenet   # 8 devices

See docs/training.md.
"""
import argparse
import os
import sys

from tnt_common.recipe import RECIPE
from tnt_common.variants import list_models, model_args

# Defaults that depend on the data: the recipe for an image folder, a small fast run for digits.
PRESETS = {
    'recipe': dict(
        model='tnt_s_patch16_224', epochs=RECIPE['epochs'], batch_size=128, lr=RECIPE['lr'],
        lr_base_batch=RECIPE['lr_base_batch'], warmup_epochs=RECIPE['warmup_epochs'],
        drop_path=RECIPE['drop_path'], smoothing=RECIPE['smoothing'], mixup=RECIPE['mixup'],
        cutmix=RECIPE['cutmix'], rand_augment=RECIPE['rand_augment'], reprob=RECIPE['reprob'], hflip=0.5,
        scale_min=0.08, repeated_aug=RECIPE['repeated_aug'], ema=True, output='runs/imagenet', img_size=None),
    'digits': dict(
        model='tnt_tiny_patch16_64', img_size=32, epochs=20, batch_size=64, lr=2e-3, lr_base_batch=64,
        warmup_epochs=2, drop_path=0.0, smoothing=0.1, mixup=0.0, cutmix=0.0, rand_augment='', reprob=0.0,
        hflip=0.0, scale_min=0.5, repeated_aug=0, ema=False, output='runs/digits'),
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog='train_ascend.py', description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group('data and model')
    g.add_argument('--data', help='folder with train/ and val/ class sub-folders (default: scikit-learn digits)')
    g.add_argument('--output', help='run folder: logs, metrics, plots, checkpoints, exports')
    g.add_argument('--model', choices=list_models())
    g.add_argument('--img-size', type=int, help="input size (default: the variant's)")
    g.add_argument('--num-classes', type=int, help='replace the head of --pretrained with this many classes')
    g.add_argument('--pretrained', help='initial weights: any checkpoint the converters read (timm, official, ...)')
    g.add_argument('--resume', help='training checkpoint, or a run folder (its latest checkpoint)')
    g.add_argument('--eval-only', action='store_true', help='evaluate and exit')
    g.add_argument('--export', action='store_true', help='write <output>/tnt.mindir of the final model')
    g = ap.add_argument_group('device')
    g.add_argument('--device', default='auto', choices=('auto', 'Ascend', 'GPU', 'CPU'))
    g.add_argument('--pynative', action='store_true', help='PyNative mode (debugging); default GRAPH mode')
    g.add_argument('--amp', choices=('O0', 'O2', 'O3'), help='mixed precision (default O2 on Ascend/GPU, O0 on CPU)')
    g.add_argument('--loss-scale', type=float,
                   help=f"initial dynamic loss scale, 0 = off (default {RECIPE['loss_scale']:.0f} with AMP, off at O0)")
    g.add_argument('--loss-scale-window', type=int, default=RECIPE['loss_scale_window'])
    g = ap.add_argument_group('optimisation')
    g.add_argument('--epochs', type=int)
    g.add_argument('--batch-size', type=int, help='images per rank and step')
    g.add_argument('--eval-batch-size', type=int)
    g.add_argument('--lr', type=float, help='peak LR at --lr-base-batch images, scaled linearly to the global batch')
    g.add_argument('--lr-base-batch', type=int)
    g.add_argument('--warmup-epochs', type=float)
    g.add_argument('--warmup-lr', type=float, default=RECIPE['warmup_lr'])
    g.add_argument('--min-lr', type=float, default=RECIPE['min_lr'])
    g.add_argument('--weight-decay', type=float, default=RECIPE['weight_decay'])
    g.add_argument('--opt-eps', type=float, default=RECIPE['eps'])
    g.add_argument('--clip-grad', type=float, default=RECIPE['clip_grad'], help='global-norm clip, 0 = off')
    g.add_argument('--drop-path', type=float)
    g.add_argument('--ema', action=argparse.BooleanOptionalAction, help='EMA of the weights, evaluated and saved')
    g.add_argument('--ema-decay', type=float, default=RECIPE['ema_decay'])
    g = ap.add_argument_group('augmentation')
    g.add_argument('--smoothing', type=float)
    g.add_argument('--mixup', type=float, help='Mixup alpha, 0 = off')
    g.add_argument('--cutmix', type=float, help='CutMix alpha, 0 = off (with both on, each batch picks one)')
    g.add_argument('--rand-augment', help="timm-style config, e.g. rand-m9-mstd0.5-inc1; '' = off")
    g.add_argument('--reprob', type=float, help='random erasing probability')
    g.add_argument('--hflip', type=float, help='horizontal flip probability')
    g.add_argument('--scale-min', type=float, help='RandomResizedCrop lower area bound')
    g.add_argument('--repeated-aug', type=int, help='repeated augmentation: copies of each image per epoch (0 = off)')
    g.add_argument('--no-augment', action='store_true',
                   help='train on the eval transform: no random crop, flip, RandAugment, erasing or mixing')
    g.add_argument('--crop-pct', type=float, help="eval centre-crop fraction (default: the variant's, 0.9)")
    g = ap.add_argument_group('run')
    g.add_argument('--seed', type=int, default=0)
    g.add_argument('--workers', type=int, default=2, help='data pipeline workers per map')
    g.add_argument('--prefetch', type=int, default=0, help='dataset prefetch queue size (0: MindSpore default)')
    g.add_argument('--save-every', type=int, default=0, help='also checkpoint every N steps')
    g.add_argument('--keep-checkpoints', type=int, default=3, help='how many recent checkpoints to keep (plus best)')
    g.add_argument('--eval-every', type=int, default=1, help='evaluate every N epochs (and after the last)')
    g.add_argument('--log-interval', type=int, default=50, help='log a line every N steps when not on a terminal')
    args = ap.parse_args(argv)
    preset = PRESETS['recipe' if args.data else 'digits']
    model_given = args.model is not None
    for key, value in preset.items():
        if getattr(args, key) is None and not (key == 'img_size' and model_given):
            setattr(args, key, value)
    args.img_size = args.img_size or model_args(args.model)['img_size']
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    return args


def check_args(args):
    """Checks of everything the run needs (arguments, output folder, data, files), before the device is set up."""
    from tnt_train.checkpoint import read as read_checkpoint, resolve_resume
    from tnt_train.data import check_dataset, export_digits
    from tnt_train.errors import InputError
    for name in ('epochs', 'batch_size', 'eval_batch_size', 'workers', 'eval_every'):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.img_size % 16:
        raise InputError(f'--img-size {args.img_size} is not a multiple of the patch size 16')
    try:
        os.makedirs(args.output, exist_ok=True)
        probe = os.path.join(args.output, f'.write-test-{os.getpid()}')
        with open(probe, 'w') as f:
            f.write('ok')
        os.remove(probe)
    except OSError as e:
        raise InputError(f'output folder {args.output} is not writable ({e.strerror})') from None
    if args.data is None:
        args.data = export_digits()
    classes = check_dataset(args.data, need_train=not args.eval_only)
    if args.num_classes is not None and args.num_classes != len(classes):
        raise InputError(f'--num-classes {args.num_classes} but {args.data} has {len(classes)} classes')
    if args.pretrained and not os.path.isfile(args.pretrained):
        raise InputError(f'--pretrained {args.pretrained} does not exist')
    if args.resume:
        args.resume = resolve_resume(args.resume)
        args.resume_state = read_checkpoint(args.resume)   # CRC-checked now, restored after the build
    return classes


def main(argv=None):
    from tnt_train.errors import InputError
    args = parse_args(argv)
    try:
        classes = check_args(args)
        from tnt_train.device import setup
        runtime = setup(args.device, args.pynative, args.seed)
        if args.amp is None:
            args.amp = 'O0' if runtime.device == 'CPU' else 'O2'
        if args.loss_scale is None:
            args.loss_scale = 0. if args.amp == 'O0' else RECIPE['loss_scale']
        from tnt_train.loop import Trainer
        trainer = Trainer(args, runtime, classes)
        if args.resume:
            trainer.resume(args.resume, args.resume_state)
    except InputError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.eval_only:
        r = trainer.evaluate()
        if runtime.is_main:
            print(f"{args.model} on {args.data}/val: top-1 {r['top1']:.2f} top-5 {r['top5']:.2f} "
                  f"loss {r['loss']:.4f} ({r['count']} images)"
                  + (f", EMA top-1 {r['ema_top1']:.2f} top-5 {r['ema_top5']:.2f}" if 'ema_top1' in r else ''))
    else:
        trainer.fit()
    if args.export:
        path = trainer.export()
        if path:
            print(f'exported {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
