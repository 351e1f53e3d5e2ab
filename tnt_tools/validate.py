"""Top-1, top-5 and loss of a TNT checkpoint on an image folder, in MindSpore or torch_ref.

DATA holds one sub-folder of images per class (ImageNet style); DATA/val is used if it
exists. Images are resized (bicubic, shorter side to img-size / crop-pct), centre-cropped
and normalised with the variant's pretrained config (mean = std = 0.5).

examples:
  tnt-validate tnt_s_patch16_224.safetensors /data/imagenet
  tnt-validate tnt_s_patch16_224.safetensors /data/imagenet --framework torch
  tnt-validate tnt_s_81.5.pth.tar /data/imagenet --device Ascend --amp O2 -b 256 -j 8
  tnt-validate runs/digits/model.ckpt ~/.cache/tnt_train/sklearn_digits --img-size 32
  tnt-validate model.ckpt /data/imagenet/val --crop-pct 1.0 --results-file results.json
  tnt-validate model.ckpt /data/imagenet --results-file results.csv
"""
import csv
import json
import os
import sys
import time

import numpy as np

from tnt_common.cli import parser
from tnt_common.files import atomic_output, unwritable
from tnt_tools.common import BadInput, add_checkpoint_args, add_framework_args, load, run, setup_mindspore

PROG = 'tnt-validate'
RESULT_SUFFIXES = ('.csv', '.json')


def add_preprocessing_args(ap):
    ap.add_argument('--crop-pct', type=float,
                    help="centre-crop fraction: resize to img-size / crop-pct, then crop (default: the variant's, 0.9)")


def check_model_args(args):
    if args.img_size is not None and args.img_size < 1:
        raise BadInput(f'--img-size must be positive, got {args.img_size}')
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        raise BadInput(f'--crop-pct {args.crop_pct:g} is not in (0, 1]')
    if args.framework == 'torch' and args.amp != 'O0':
        raise BadInput(f'--amp {args.amp} applies to MindSpore; torch_ref runs in fp32')
    if args.framework == 'torch' and args.device not in ('auto', 'CPU'):
        raise BadInput(f'--device {args.device} applies to MindSpore; torch_ref runs on the CPU')


def preprocessing(args, can):
    """``dict(img_size, crop_pct, mean, std)``: the flags, else the checkpoint's size and its variant's config."""
    from tnt_common.variants import pretrained_cfg
    cfg = pretrained_cfg(can.variant)
    return dict(img_size=args.img_size or can.img_size, crop_pct=args.crop_pct or cfg['crop_pct'],
                mean=cfg['mean'], std=cfg['std'])


def describe_preprocessing(p):
    return (f"resize {int(p['img_size'] / p['crop_pct'])} bicubic, centre crop {p['img_size']}, "
            f"mean {'/'.join(f'{m:g}' for m in p['mean'])}, std {'/'.join(f'{s:g}' for s in p['std'])}")


def parse_args(argv):
    ap = parser(PROG, __doc__)
    add_checkpoint_args(ap)
    ap.add_argument('data', metavar='DATA', help='image folder with one sub-folder per class (DATA/val if present)')
    add_preprocessing_args(ap)
    add_framework_args(ap)
    ap.add_argument('-b', '--batch-size', type=int, default=64, help='images per batch (default 64)')
    ap.add_argument('-j', '--workers', type=int, default=2, help='data pipeline workers (default 2)')
    ap.add_argument('--results-file', metavar='PATH', help='also write the results as CSV or JSON (by suffix)')
    args = ap.parse_args(argv)
    for name in ('batch_size', 'workers'):
        if getattr(args, name) < 1:
            raise BadInput(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    check_model_args(args)
    if args.results_file:
        check_results_file(args.results_file)
    return args


def check_results_file(path):
    if not path.lower().endswith(RESULT_SUFFIXES):
        raise BadInput(f'--results-file {path}: the name must end in .csv or .json')
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BadInput(f'--results-file {path}: folder {folder} does not exist')
    if os.path.isdir(path):
        raise BadInput(f'--results-file {path} is a folder')
    if problem := unwritable(folder):   # before the evaluation, not after it
        raise BadInput(f'--results-file {path}: folder {problem}')


def write_results(path, row):
    """``row`` as a one-row CSV or a JSON object, by the suffix of ``path``; atomically."""
    with atomic_output(path) as tmp, open(tmp, 'w', newline='') as f:
        if path.lower().endswith('.json'):
            json.dump(row, f, indent=1)
            f.write('\n')
        else:
            writer = csv.DictWriter(f, list(row))
            writer.writeheader()
            writer.writerow(row)


def split_folder(data):
    """(root, split, class names) of DATA/val if it exists, else of DATA."""
    from tnt_train.data import image_folder_classes, require_folder
    from tnt_train.errors import InputError
    folder = os.path.abspath(os.path.join(data, 'val') if os.path.isdir(os.path.join(data, 'val')) else data)
    try:
        require_folder(data)
        classes = image_folder_classes(folder)
    except InputError as e:
        raise BadInput(str(e)) from None
    return os.path.dirname(folder), os.path.basename(folder), classes


class Batches:
    """A dataset whose iterator advances a progress bar and times the batches after the first.

    The first batch includes graph compilation (MindSpore), so ``img_per_s`` is measured
    after it (over all batches if there is only one).
    """

    def __init__(self, dataset, desc):
        self.dataset, self.desc = dataset, desc
        self.images = self.warm_images = 0
        self.seconds = self.warm_seconds = 0.

    def create_tuple_iterator(self, **kwargs):
        from tqdm import tqdm
        start = time.perf_counter()
        warm = None
        with tqdm(desc=self.desc, unit='img', disable=None, leave=False) as bar:
            for images, labels in self.dataset.create_tuple_iterator(**kwargs):
                yield images, labels
                if warm is None:
                    warm = time.perf_counter()
                else:
                    self.warm_images += len(labels)
                self.images += len(labels)
                bar.update(len(labels))
        end = time.perf_counter()
        self.seconds, self.warm_seconds = end - start, end - (warm or start)

    @property
    def img_per_s(self):
        if self.warm_images:
            return self.warm_images / self.warm_seconds
        return self.images / self.seconds if self.seconds else float('nan')


def evaluate_torch(model, batches, num_classes):
    """``{loss, top1, top5, count}`` of a torch model over ``(image, label)`` numpy batches."""
    import torch
    k = min(5, num_classes)
    total = np.zeros(4, np.float64)
    with torch.inference_mode():
        for images, labels in batches.create_tuple_iterator(output_numpy=True, num_epochs=1):
            logits = model(torch.from_numpy(images)).float()
            target = torch.from_numpy(labels).long()
            loss = torch.nn.functional.cross_entropy(logits, target, reduction='none')
            hits = logits.topk(k, dim=1).indices == target[:, None]
            total += [float(loss.sum()), float(hits[:, 0].sum()), float(hits.any(dim=1).sum()), len(labels)]
    loss, top1, top5, count = total
    count = max(count, 1.)
    return dict(loss=loss / count, top1=100. * top1 / count, top5=100. * top5 / count, count=int(count))


def main(argv=None):
    return run(PROG, _main, argv)


def _main(argv):
    args = parse_args(argv)
    root, split, classes = split_folder(args.data)
    device = setup_mindspore(args.device) if args.framework == 'mindspore' else 'CPU'
    model, can = load(args)
    if can.num_classes != len(classes):
        raise BadInput(f'{args.checkpoint} has a {can.num_classes}-class head but {os.path.join(root, split)} '
                       f'has {len(classes)} classes')
    pre = preprocessing(args, can)
    from tnt_train.data import eval_dataset
    dataset = eval_dataset(root, classes, pre['img_size'], pre['crop_pct'], args.batch_size, pre['mean'],
                           pre['std'], workers=args.workers, split=split)
    print(f'checkpoint  {args.checkpoint}: {can.variant}, {can.num_classes} classes, numerics {can.numerics.name}')
    print(f'data        {os.path.join(root, split)}: {len(classes)} classes')
    print(f'preprocess  {describe_preprocessing(pre)}')
    amp = f', AMP {args.amp}' if args.framework == 'mindspore' else ''
    print(f'run         {args.framework} on {device}{amp}, batch {args.batch_size}', flush=True)
    batches = Batches(dataset, f'{args.framework} {can.variant}')
    from tnt_train.data import reading_images
    from tnt_train.errors import InputError
    try:
        with reading_images():
            if args.framework == 'mindspore':
                from mindspore_tnt.amp import apply_amp
                from tnt_train.evaluate import Evaluator
                result = Evaluator(apply_amp(model, args.amp), can.num_classes, args.batch_size)(batches)
            else:
                result = evaluate_torch(model, batches, can.num_classes)
    except InputError as e:
        raise BadInput(str(e)) from None
    print(f"images      {result['count']}")
    print(f"top-1       {result['top1']:.3f} % (error {100 - result['top1']:.3f})")
    print(f"top-5       {result['top5']:.3f} % (error {100 - result['top5']:.3f})")
    print(f"loss        {result['loss']:.4f}")
    when = 'after the first batch' if batches.warm_images else 'one batch, its graph compile included'
    print(f'speed       {batches.img_per_s:.1f} img/s {when} ({batches.seconds:.1f} s in all)')
    if args.results_file:
        write_results(args.results_file, dict(
            checkpoint=args.checkpoint, model=can.variant, framework=args.framework, device=device,
            amp=args.amp if args.framework == 'mindspore' else 'fp32', numerics=can.numerics.name,
            data=os.path.join(root, split), num_classes=can.num_classes, images=result['count'],
            img_size=pre['img_size'], crop_pct=pre['crop_pct'], interpolation='bicubic', batch_size=args.batch_size,
            top1=result['top1'], top1_err=100 - result['top1'], top5=result['top5'], top5_err=100 - result['top5'],
            loss=result['loss'], img_per_s=batches.img_per_s, seconds=batches.seconds))
        print(f'results     {args.results_file}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
