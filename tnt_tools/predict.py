"""Top-k classes of images under a TNT checkpoint, in MindSpore or torch_ref.

Every image gets tnt-validate's preprocessing, with the same MindSpore image ops: decode,
bicubic resize of the shorter side to img-size / crop-pct, centre crop, normalisation
with the variant's pretrained config. A 1000-class head is named with the ImageNet-1k
classes; any other head needs --labels (one class name per line, in the head's order).

examples:
  tnt-predict tnt_s_patch16_224.safetensors cat.jpg dog.png
  tnt-predict tnt_s_patch16_224.safetensors cat.jpg --framework torch --topk 3
  tnt-predict tnt_s_81.5.pth.tar photos/*.jpg --json > predictions.json
  tnt-predict runs/digits/model.ckpt seven.png --labels digits.txt --topk 3
  tnt-predict model.ckpt cat.jpg --device Ascend --amp O2 -b 32
"""
import json
import os
import sys
from importlib import resources

import numpy as np

from tnt_common.cli import parser
from tnt_tools.common import BadInput, add_checkpoint_args, add_framework_args, load, run, setup_mindspore
from tnt_tools.validate import add_preprocessing_args, check_model_args, describe_preprocessing, preprocessing

PROG = 'tnt-predict'


def imagenet_classes():
    """``[(synset, name), ...]`` of the ImageNet-1k classes in the order of a 1000-class head."""
    data = resources.files('tnt_tools') / 'data'
    synsets = (data / 'imagenet_synsets.txt').read_text('utf-8').split()
    lemma_lines = (data / 'imagenet_synset_to_lemma.txt').read_text('utf-8').splitlines()
    lemmas = dict(line.split('\t', 1) for line in lemma_lines)
    return [(s, lemmas[s]) for s in synsets]


def read_labels(path):
    """Class names of a labels file, one per line (trailing blank lines ignored)."""
    try:
        with open(path, encoding='utf-8') as f:
            names = [line.strip() for line in f.read().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f'--labels {path}: {getattr(e, "strerror", None) or e}') from None
    while names and not names[-1]:
        names.pop()
    if not names:
        raise BadInput(f'--labels {path} holds no class names')
    if '' in names:
        raise BadInput(f'--labels {path}: line {names.index("") + 1} is empty')
    return [(None, n) for n in names]


# The first bytes of the formats MindSpore's Decode reads: JPEG, PNG, BMP, TIFF (either byte order)
SIGNATURES = (b'\xff\xd8\xff', b'\x89PNG', b'BM', b'II*\x00', b'MM\x00*')


def load_image(path, pre):
    """``(3, S, S)`` float32 of image ``path`` under the eval preprocessing ``pre`` (tnt-validate's ops)."""
    from tnt_train.data import _eval_ops, jpeg_damage, reading_images
    from tnt_train.errors import InputError
    x = np.fromfile(path, np.uint8)
    if not bytes(x[:4]).startswith(SIGNATURES):
        raise BadInput(f'{path} is not an image MindSpore decodes (JPEG, PNG, BMP, TIFF)')
    damage = jpeg_damage(x)
    if damage:
        raise BadInput(f'{path} is a damaged JPEG: {damage}')
    try:
        with reading_images(f'{path} could not be decoded'):   # removes the copy Decode dumps into the cwd
            for op in _eval_ops(pre['img_size'], pre['crop_pct'], pre['mean'], pre['std']):
                x = op(x)
    except InputError as e:
        raise BadInput(str(e)) from None
    except (RuntimeError, ValueError, TypeError):
        raise BadInput(f'{path} is not an image MindSpore decodes (JPEG, PNG, BMP, TIFF)') from None
    return x


def logits_of(model, framework, paths, pre, batch_size):
    """``(N, K)`` float32 logits of the images at ``paths``, decoded batch by batch (the last one
    padded: one compiled graph)."""
    out = []
    size = min(batch_size, len(paths))
    for i in range(0, len(paths), size):
        batch = np.stack([load_image(p, pre) for p in paths[i:i + size]])
        n = len(batch)
        batch = np.concatenate([batch, np.zeros((size - n,) + batch.shape[1:], batch.dtype)])
        if framework == 'mindspore':
            import mindspore as ms
            out.append(model(ms.Tensor(batch)).asnumpy()[:n])
        else:
            import torch
            with torch.inference_mode():
                out.append(model(torch.from_numpy(batch)).numpy()[:n])
    return np.concatenate(out).astype(np.float32)


def top_k(logits, classes, k):
    """Per image, the ``k`` most probable classes: ``[{rank, index, synset (ImageNet), label, probability}]``."""
    z = logits.astype(np.float64)
    probs = np.exp(z - z.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    result = []
    for p in probs:
        rows = []
        for rank, i in enumerate(np.argsort(-p, kind='stable')[:k], 1):
            synset, name = classes[i]
            rows.append(dict(rank=rank, index=int(i), **({'synset': synset} if synset else {}), label=name,
                             probability=float(p[i])))
        result.append(rows)
    return result


def parse_args(argv):
    ap = parser(PROG, __doc__)
    add_checkpoint_args(ap)
    ap.add_argument('images', metavar='IMAGE', nargs='+', help='image files (JPEG, PNG, BMP, TIFF)')
    ap.add_argument('--topk', type=int, default=5, help='classes per image (default 5)')
    ap.add_argument('--labels', metavar='FILE', help="class names, one per line (default: ImageNet-1k's)")
    ap.add_argument('--json', action='store_true', help='print JSON instead of text')
    add_preprocessing_args(ap)
    add_framework_args(ap)
    ap.add_argument('-b', '--batch-size', type=int, default=16, help='images per batch (default 16)')
    args = ap.parse_args(argv)
    for name in ('topk', 'batch_size'):
        if getattr(args, name) < 1:
            raise BadInput(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    check_model_args(args)
    return args


def main(argv=None):
    return run(PROG, _main, argv)


def _main(argv):
    args = parse_args(argv)
    classes = read_labels(args.labels) if args.labels else None
    for path in args.images:
        if not os.path.isfile(path):
            raise BadInput(f'image {path} ' + ('is not a file' if os.path.exists(path) else 'does not exist'))
    device = setup_mindspore(args.device) if args.framework == 'mindspore' else 'CPU'
    model, can = load(args)
    if can.num_classes == 0:
        raise BadInput(f'{args.checkpoint} has no classifier head (a feature extractor): there are no classes '
                       'to predict')
    if classes is None:
        if can.num_classes != 1000:
            raise BadInput(f'{args.checkpoint} has a {can.num_classes}-class head, not ImageNet-1k\'s 1000 classes: '
                           f'name them with --labels FILE')
        classes = imagenet_classes()
    elif len(classes) != can.num_classes:
        raise BadInput(f'{args.checkpoint} has a {can.num_classes}-class head but --labels {args.labels} '
                       f'names {len(classes)} classes')
    if args.topk > can.num_classes:
        raise BadInput(f'--topk {args.topk} but the head has {can.num_classes} classes')
    pre = preprocessing(args, can)
    if args.framework == 'mindspore':
        from mindspore_tnt.amp import apply_amp
        model = apply_amp(model, args.amp)
    predictions = top_k(logits_of(model, args.framework, args.images, pre, args.batch_size), classes, args.topk)
    if args.json:
        json.dump(dict(checkpoint=args.checkpoint, model=can.variant, framework=args.framework, device=device,
                       amp=args.amp if args.framework == 'mindspore' else 'fp32', numerics=can.numerics.name,
                       img_size=pre['img_size'], crop_pct=pre['crop_pct'],
                       images=[dict(image=p, topk=t) for p, t in zip(args.images, predictions)]),
                  sys.stdout, indent=1)
        print()
        return 0
    amp = f', AMP {args.amp}' if args.framework == 'mindspore' else ''
    print(f'{args.checkpoint}: {can.variant}, {can.num_classes} classes, numerics {can.numerics.name}; '
          f'{args.framework} on {device}{amp}')
    print(f'preprocess: {describe_preprocessing(pre)}')
    for path, rows in zip(args.images, predictions):
        print(f'\n{path}')
        for r in rows:
            synset = f"  ({r['synset']})" if 'synset' in r else ''
            print(f"  {r['rank']:>2}  {100 * r['probability']:6.2f} %  {r['label']}{synset}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
