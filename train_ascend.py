"""Train TNT with MindSpore on Ascend, GPU or CPU; one device, or data-parallel under msrun.

The flags are timm's train.py flags wherever timm has the setting (-b, -j, --aa, --lr,
--lr-base, --model-ema, --initial-checkpoint, ...). -c FILE.yaml reads settings keyed by
the flags' dest names; flags on the command line override the file. What neither sets
comes from a preset: digits without --data, imagenet (the official recipe) with it, or
the one --preset names. Installed, `tnt-train` is the same command.

examples:
  python train_ascend.py                                   # preset digits: tnt_tiny on scikit-learn's digits, CPU
  python train_ascend.py --data /data/imagenet             # preset imagenet: the recipe, tnt_s_patch16_224
  python train_ascend.py -c configs/tnt_s_imagenet.yaml --data /data/imagenet -b 64   # YAML, overridden
  python train_ascend.py -c configs/finetune.yaml --data /data/flowers \\
      --initial-checkpoint tnt_s_patch16_224.pth --num-classes 102                  # fine-tuning
  python train_ascend.py --eval-only --initial-checkpoint tnt_s_81.5.pth.tar --data /data/imagenet
  python train_ascend.py --resume runs/digits              # continue a run from its latest checkpoint
  msrun --worker_num=8 --local_worker_num=8 train_ascend.py --data /data/imagenet   # 8 devices

See docs/training.md.
"""
import argparse
import difflib
import math
import os
import sys

from tnt_common.cli import DEVICES, Parser, add_model, bad_input, end_on_sigterm
from tnt_common.recipe import RECIPE, recipe
from tnt_common.variants import family, model_args

PROG = os.path.basename(sys.argv[0]) or 'train_ascend.py'  # train_ascend.py, or tnt-train
SETTINGS = 'args.yaml'    # the run's settings in its folder, as timm writes them
UNSAVED = ('resume', 'eval_only', 'pretrained')

# What a preset fills in when neither the command line nor the config sets it.
PRESETS = {
    'imagenet': dict(
        model='tnt_s_patch16_224', epochs=RECIPE['epochs'], batch_size=128, lr_base=RECIPE['lr'],
        lr_base_size=RECIPE['lr_base_batch'], warmup_epochs=RECIPE['warmup_epochs'], drop_path=RECIPE['drop_path'],
        smoothing=RECIPE['smoothing'], mixup=RECIPE['mixup'], cutmix=RECIPE['cutmix'], aa=RECIPE['rand_augment'],
        reprob=RECIPE['reprob'], hflip=0.5, scale=(0.08, 1.), aug_repeats=RECIPE['repeated_aug'], model_ema=True,
        output='runs/imagenet'),
    'digits': dict(
        model='tnt_tiny_patch16_64', img_size=32, epochs=20, batch_size=64, lr_base=2e-3, lr_base_size=64,
        warmup_epochs=2, drop_path=0.0, smoothing=0.1, mixup=0.0, cutmix=0.0, aa='', reprob=0.0, hflip=0.0,
        scale=(0.5, 1.), aug_repeats=0, model_ema=False, output='runs/digits'),
}


class ScaleMin(argparse.Action):
    """``--scale-min X``: the lower bound of ``--scale``; the upper one stays (1 unless set)."""

    def __call__(self, parser, namespace, value, option_string=None):
        namespace.scale = (value, namespace.scale[1] if namespace.scale else 1.)


class HubWeights(argparse.Action):
    """timm's ``--pretrained`` switch: weights from a model hub, which this trainer does not download."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error('--pretrained downloads weights from a model hub, which this trainer does not do; '
                     'pass --initial-checkpoint FILE')


def build_parser():
    ap = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group('config and preset')
    g.add_argument('-c', '--config', metavar='FILE.yaml',
                   help="settings keyed by the flags' dest names (batch_size: 128, aa: rand-m9-mstd0.5-inc1); "
                        'the command line overrides them')
    g.add_argument('--preset', choices=tuple(PRESETS),
                   help='defaults for what is not set: digits (the default without --data) or imagenet, '
                        'the official recipe (the default with --data)')
    g = ap.add_argument_group('data and model')
    g.add_argument('--data', '--data-dir', metavar='DIR',
                   help='folder with train/ and val/ class sub-folders (default: scikit-learn digits)')
    g.add_argument('--output', help='run folder: logs, metrics, plots, checkpoints, exports')
    add_model(g, 'a TNT or PyramidTNT (ptnt_*) variant')
    g.add_argument('--img-size', type=int, help="input size (default: the variant's)")
    g.add_argument('--num-classes', type=int, help='replace the head of --initial-checkpoint with this many classes')
    g.add_argument('--initial-checkpoint', metavar='FILE',
                   help='initial weights: any checkpoint the converters read (timm, official, MindCV, ...)')
    g.add_argument('--pretrained', action=HubWeights,
                   help="timm's hub download, not available here: pass --initial-checkpoint FILE")
    g.add_argument('--numerics', help="GELU form and LayerNorm eps of the model: a preset (pytorch, mindcv, zoo) "
                                      "or gelu=erf|tanh,norm_eps=X,final_norm_eps=Y (default: what "
                                      "--initial-checkpoint records or its family implies, else pytorch)")
    g.add_argument('--resume', help='training checkpoint, or a run folder (its latest checkpoint)')
    g.add_argument('--eval-only', action='store_true', help='evaluate and exit')
    g.add_argument('--export', action='store_true', help='write <output>/tnt.mindir of the final model')
    g = ap.add_argument_group('device')
    g.add_argument('--device', default='auto', choices=DEVICES)
    g.add_argument('--pynative', action='store_true', help='PyNative mode (debugging); default GRAPH mode')
    g.add_argument('--amp', nargs='?', const='O2', choices=('O0', 'O2', 'O3'),
                   help='mixed precision, --amp alone: O2 (default O2 on Ascend/GPU, O0 on CPU)')
    g.add_argument('--loss-scale', type=float,
                   help=f"initial dynamic loss scale, 0 = off (default {RECIPE['loss_scale']:.0f} with AMP, off at O0)")
    g.add_argument('--loss-scale-window', type=int, default=RECIPE['loss_scale_window'])
    g = ap.add_argument_group('optimisation')
    g.add_argument('--epochs', type=int)
    g.add_argument('-b', '--batch-size', type=int, help='images per rank and step')
    g.add_argument('-vb', '--validation-batch-size', '--eval-batch-size', type=int,
                   help='evaluation images per rank and step (default: --batch-size)')
    g.add_argument('--lr', type=float, help='peak LR (default: --lr-base scaled to the global batch)')
    g.add_argument('--lr-base', type=float, help='peak LR at a global batch of --lr-base-size, when --lr is not given')
    g.add_argument('--lr-base-size', '--lr-base-batch', type=int, help='the global batch --lr-base is for')
    g.add_argument('--lr-base-scale', choices=('linear', 'sqrt'), default='linear',
                   help='how the LR follows the global batch (default linear, the recipe\'s)')
    g.add_argument('--warmup-epochs', type=float)
    g.add_argument('--warmup-lr', type=float, default=RECIPE['warmup_lr'])
    g.add_argument('--min-lr', type=float, default=RECIPE['min_lr'])
    g.add_argument('--weight-decay', type=float, default=RECIPE['weight_decay'])
    g.add_argument('--opt-eps', type=float, default=RECIPE['eps'])
    g.add_argument('--clip-grad', type=float, default=RECIPE['clip_grad'], help='global-norm clip, 0 = off')
    g.add_argument('--drop-path', type=float)
    g.add_argument('--model-ema', '--ema', action=argparse.BooleanOptionalAction,
                   help='EMA of the weights, evaluated and saved')
    g.add_argument('--model-ema-decay', '--ema-decay', type=float, default=RECIPE['ema_decay'])
    g.add_argument('--dist-bn', choices=('reduce', 'broadcast', ''), default='reduce',
                   help="under msrun, BatchNorm statistics (PyramidTNT's stem) after each epoch: 'reduce' "
                        "averages them over the ranks, 'broadcast' takes rank 0's, '' leaves each rank its own "
                        "(default reduce, as timm's)")
    g = ap.add_argument_group('augmentation')
    g.add_argument('--smoothing', type=float)
    g.add_argument('--mixup', type=float, help='Mixup alpha, 0 = off')
    g.add_argument('--cutmix', type=float, help='CutMix alpha, 0 = off')
    g.add_argument('--mixup-switch-prob', type=float, default=RECIPE['mixup_switch_prob'],
                   help='with Mixup and CutMix both on: the probability that a batch takes CutMix')
    g.add_argument('--aa', '--rand-augment', metavar='SPEC',
                   help="RandAugment in timm's spec, e.g. rand-m9-mstd0.5-inc1; '' = off")
    g.add_argument('--reprob', type=float, help='random erasing probability')
    g.add_argument('--hflip', type=float, help='horizontal flip probability')
    g.add_argument('--scale', type=float, nargs=2, metavar=('MIN', 'MAX'), help='RandomResizedCrop area range')
    g.add_argument('--scale-min', type=float, action=ScaleMin, dest='scale', metavar='MIN',
                   help='RandomResizedCrop lower area bound (the upper stays)')
    g.add_argument('--aug-repeats', '--repeated-aug', type=int,
                   help='repeated augmentation: copies of each image per epoch (0 = off)')
    g.add_argument('--no-aug', '--no-augment', action='store_true',
                   help='train on the eval transform: no random crop, flip, RandAugment, erasing or mixing')
    g.add_argument('--crop-pct', type=float, help="eval centre-crop fraction (default: the variant's, 0.9)")
    g = ap.add_argument_group('run')
    g.add_argument('--seed', type=int, default=0)
    g.add_argument('-j', '--workers', type=int, default=2, help='data pipeline workers per map')
    g.add_argument('--prefetch', type=int, default=0, help='dataset prefetch queue size (0: MindSpore default)')
    g.add_argument('--save-every', type=int, default=0, help='also checkpoint every N steps')
    g.add_argument('--checkpoint-hist', '--keep-checkpoints', type=int, default=3,
                   help='how many recent checkpoints to keep (plus best)')
    g.add_argument('--eval-every', type=int, default=1, help='evaluate every N epochs (and after the last)')
    g.add_argument('--log-interval', type=int, default=50, help='log a line every N steps when not on a terminal')
    return ap


def config_keys(ap):
    """``{key: action}`` of the keys a config may set: each long flag's name with ``_`` for ``-``."""
    keys = {}
    for action in ap._actions:
        for option in action.option_strings:
            if (option.startswith('--') and action.dest not in ('help', 'config')
                    and not (isinstance(action, argparse.BooleanOptionalAction) and option.startswith('--no-'))):
                keys[option[2:].replace('-', '_')] = action
    return keys


def settings(args):
    """``{key: value}`` of the run's settings as a ``-c`` file takes them (``SETTINGS``), every
    default filled in; what names the run's state (resume, eval-only) left out."""
    out, dests = {}, set()
    for key, action in config_keys(build_parser()).items():
        value = getattr(args, action.dest, None)
        if action.dest in dests or action.dest in UNSAVED or value is None:
            continue
        dests.add(action.dest)
        out[key] = list(value) if isinstance(value, tuple) else getattr(value, 'name', value)   # Numerics: its name
    return out


def write_settings(args, path):
    """The run's ``settings`` as YAML at ``path`` (timm's ``args.yaml``): ``-c`` of it runs the run again."""
    import yaml
    from tnt_common.files import atomic_output
    with atomic_output(path) as tmp, open(tmp, 'w') as f:
        yaml.safe_dump(settings(args), f, sort_keys=False)


def config_argv(ap, path):
    """The command-line arguments that set what the YAML file ``path`` sets."""
    try:
        import yaml
    except ImportError:
        ap.error('reading it needs PyYAML (pip install pyyaml)')
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except OSError as e:
        ap.error(f'cannot read it ({e.strerror})')
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        ap.error('not valid YAML' + (f' (line {mark.line + 1})' if mark else ''))
    if not isinstance(cfg, dict):
        ap.error('not a mapping of settings (key: value)')
    keys, argv = config_keys(ap), []
    for key, value in cfg.items():
        action = keys.get(key)
        if action is None:
            near = difflib.get_close_matches(str(key), keys, 1)
            ap.error(f'unknown key {key!r}' + (f" (did you mean '{near[0]}'?)" if near else ''))
        flag = '--' + key.replace('_', '-')
        if value is None:
            continue
        if action.nargs == 0:
            if not isinstance(value, bool):
                ap.error(f'{key} is a switch: true or false, not {value!r}')
            if value or isinstance(action, argparse.BooleanOptionalAction):
                argv.append(flag if value else '--no-' + flag[2:])
        elif isinstance(value, (bool, dict)):
            ap.error(f'{key} takes a value, not {value!r}')
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        else:
            argv.append(f'{flag}={value}')
    return argv


def as_flags(settings):
    """``{dest: value}`` written as command-line flags."""
    out = []
    for key, value in settings.items():
        flag = '--' + key.replace('_', '-')
        if isinstance(value, bool):
            out.append(flag if value else '--no-' + flag[2:])
        elif isinstance(value, tuple):
            out.append(' '.join([flag, *map(str, value)]))
        else:
            out.append(f"{flag} {value if value != '' else repr(value)}")
    return ' '.join(out)


def parse_args(argv=None):
    """The run's settings: the command line, over the ``-c`` YAML file, over the preset, over the defaults.

    ``args.preset`` names the preset and ``args.preset_note`` says why and what it set.
    """
    ap = build_parser()
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    cli = args = ap.parse_args(argv)
    output_given = cli.output is not None    # on the command line (``args`` may be ``cli``, filled below)
    if cli.config:
        ap.context = f'config {cli.config}: '
        args = ap.parse_args(config_argv(ap, cli.config))
        ap.context = ''
        args = ap.parse_args(argv, namespace=args)
    if args.preset:
        why = '--preset given' if cli.preset else f'set in {cli.config}'
    elif args.data:
        args.preset, why = 'imagenet', '--data given' if cli.data else f'data set in {cli.config}'
    else:
        args.preset, why = 'digits', 'no --data given'
    model_given, filled = args.model is not None, {}
    preset = dict(PRESETS[args.preset])
    if args.preset == 'imagenet' and args.model is not None and family(args.model) == 'ptnt':
        preset['warmup_epochs'] = recipe('ptnt')['warmup_epochs']   # PyramidTNT's recipe: 20
    for key, value in preset.items():
        if getattr(args, key) is None and not (key == 'img_size' and model_given):
            setattr(args, key, value)
            filled[key] = value
    args.preset_note = (f'preset {args.preset}: {why}',) + \
        ((f'preset {args.preset} sets {as_flags(filled)}',) if filled else ())
    args.output_given = output_given
    if args.eval_only and not args.resume and args.model_ema:   # an EMA of weights just loaded is those weights
        args.model_ema = False
        args.preset_note += ('--eval-only without --resume: no EMA weights to evaluate',)
    if args.img_size is None:
        args.img_size = model_args(args.model)['img_size']
    if args.validation_batch_size is None:
        args.validation_batch_size = args.batch_size
    args.scale = tuple(args.scale)
    return args


def peak_lr(args, world):
    """``(peak LR, note)``: ``--lr`` as given (note ``None``), else ``--lr-base`` scaled to the global batch."""
    if args.lr is not None:
        return args.lr, None
    global_batch = args.batch_size * world
    ratio = global_batch / args.lr_base_size
    lr = args.lr_base * (ratio ** 0.5 if args.lr_base_scale == 'sqrt' else ratio)
    return lr, (f'lr {lr:.6g}: --lr-base {args.lr_base:g} at --lr-base-size {args.lr_base_size}, '
                f'{args.lr_base_scale} scaling to the global batch {global_batch}')


# Ranges of numeric settings: (names, test, what a value outside is).
RANGES = (
    (('epochs', 'batch_size', 'validation_batch_size', 'workers', 'eval_every', 'checkpoint_hist', 'lr_base_size',
      'loss_scale_window'), lambda v: v >= 1, 'must be at least 1'),
    (('seed', 'prefetch', 'save_every', 'log_interval', 'aug_repeats', 'warmup_epochs', 'warmup_lr', 'min_lr',
      'weight_decay', 'clip_grad', 'loss_scale', 'mixup', 'cutmix'), lambda v: v >= 0, 'must not be negative'),
    (('lr', 'lr_base', 'opt_eps'), lambda v: v > 0, 'must be positive'),
    (('hflip', 'reprob', 'mixup_switch_prob', 'model_ema_decay'), lambda v: 0 <= v <= 1, 'is not a probability'),
    (('smoothing', 'drop_path'), lambda v: 0 <= v < 1, 'must be in [0, 1)'),
    (('crop_pct',), lambda v: 0 < v <= 1, 'must be in (0, 1]'),
)


def output_folder(args, resumed):
    """The run folder, held by this run from here on (``tnt_train.claim``): ``--output``, else the
    resumed run's, else the config's or preset's (or, if that holds another run's checkpoints or
    another run is writing into it, the first free ``<that>-N``). ``InputError`` where ``--output``
    holds the checkpoints of another run, or where another run is writing into the folder."""
    from tnt_train.checkpoint import run_checkpoints, run_folder
    from tnt_train.claim import holder
    from tnt_train.errors import InputError
    if resumed and not args.output_given and run_folder(resumed):
        return _take(args, run_folder(resumed), refuse=True)
    same_run = resumed and run_folder(resumed) == os.path.realpath(args.output)
    if args.eval_only:
        return args.output
    if same_run or not run_checkpoints(args.output):
        if _take(args, args.output, refuse=args.output_given or same_run):
            return args.output
        why = f'{args.output} is in use by another run ({holder(args.output)})'
    elif args.output_given:
        raise InputError(f'{args.output} holds the checkpoints of another run: continue it with --resume '
                         f'{args.output}, or choose another --output')
    else:
        why = f'{args.output} holds the checkpoints of another run'
    n = 1
    while run_checkpoints(f'{args.output}-{n}') or not _take(args, f'{args.output}-{n}'):
        n += 1
    args.preset_note += (f'output {args.output}-{n}: {why}',)
    return f'{args.output}-{n}'


def _take(args, folder, refuse=False):
    """``folder`` if this run now holds it (``tnt_train.claim``; ``args.output_made`` says whether
    it made it), else None; with ``refuse``, ``InputError`` if another run holds it."""
    from tnt_train.claim import claim, holder
    from tnt_train.errors import InputError
    existed = os.path.isdir(folder)
    try:
        if claim(folder):
            args.output_made = not existed
            return folder
    except OSError as e:
        raise InputError(f'output folder {folder} is not writable ({e.strerror})') from None
    if refuse:
        raise InputError(f'{folder} is in use by another run ({holder(folder)}): wait for it to end, '
                         'or choose another --output')
    return None


def check_args(args):
    """Checks of everything the run needs (arguments, data, files, output folder), before the device
    is set up and before anything is written."""
    from tnt_common.files import unwritable
    from tnt_train.checkpoint import CKPT_DIR, read as read_checkpoint, resolve_resume
    from tnt_train.data import check_dataset, export_digits
    from tnt_train.errors import InputError
    for names, ok, what in RANGES:
        for name in names:
            value = getattr(args, name)
            if value is not None and not (math.isfinite(value) and ok(value)):
                raise InputError(f"--{name.replace('_', '-')} {value:g} " + (what if math.isfinite(value) else
                                                                             'is not a finite number'))
    if family(args.model) == 'ptnt':
        from tnt_common.pyramid import grid_sides
        try:
            if args.img_size < 1:
                raise ValueError('not positive')
            grid_sides(args.img_size)
        except ValueError as e:
            raise InputError(f'--img-size {args.img_size} does not fit {args.model}: {e}') from None
    else:
        patch = model_args(args.model)['patch_size']
        if args.img_size < 1 or args.img_size % patch:
            raise InputError(f'--img-size {args.img_size} is not a positive multiple of the patch size {patch} '
                             f'of {args.model}')
    if not 0 < args.scale[0] <= args.scale[1]:
        raise InputError(f'--scale {args.scale[0]:g} {args.scale[1]:g}: needs 0 < MIN <= MAX')
    if args.aa:
        from tnt_train.augment import parse_rand_augment
        try:
            parse_rand_augment(args.aa)
        except ValueError as e:
            raise InputError(f'--aa: {e}') from None
    if args.data is None:
        args.data = export_digits()
    classes = check_dataset(args.data, need_train=not args.eval_only)
    if args.num_classes is not None and args.num_classes != len(classes):
        raise InputError(f'--num-classes {args.num_classes} but {args.data} has {len(classes)} classes')
    if args.initial_checkpoint and not os.path.exists(args.initial_checkpoint):
        raise InputError(f'--initial-checkpoint {args.initial_checkpoint} does not exist')
    if args.numerics is not None:
        from tnt_common.numerics import parse
        try:
            parse(args.numerics)
        except ValueError as e:
            raise InputError(f'--numerics: {e}') from None
    if args.resume:
        args.resume = resolve_resume(args.resume)
        args.resume_state = read_checkpoint(args.resume)   # CRC-checked now, restored after the build
        saved = args.resume_state[1].get('numerics')
        if args.numerics is None and saved:
            from tnt_common.numerics import Numerics
            args.numerics = Numerics.from_json(saved)       # the checkpoint's, unless --numerics says
        has_ema = any(k.startswith('ema.') for k in args.resume_state[0])
        if args.eval_only and bool(args.model_ema) != has_ema:     # evaluate what the run holds
            args.model_ema = has_ema
            args.preset_note += (f"--eval-only: {args.resume} {'holds' if has_ema else 'holds no'} EMA weights",)
    args.output_made = False                               # removed again if the run is refused while empty
    args.output = output_folder(args, args.resume)
    args.output_made = args.output_made or not os.path.exists(args.output)
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as e:
        raise InputError(f'output folder {args.output} is not writable ({e.strerror})') from None
    for folder in (args.output, os.path.join(args.output, CKPT_DIR)):
        if problem := unwritable(folder):
            raise InputError(f'output folder {problem}')
    return classes


def main(argv=None):
    from tnt_train.errors import InputError
    end_on_sigterm()
    args = parse_args(argv)
    try:
        classes = check_args(args)
        from tnt_train.device import setup
        runtime = setup(args.device, args.pynative, args.seed)
        if args.amp is None:
            args.amp = 'O0' if runtime.device == 'CPU' else 'O2'
        if args.loss_scale is None:
            args.loss_scale = 0. if args.amp == 'O0' else RECIPE['loss_scale']
        args.lr, lr_note = peak_lr(args, runtime.world)
        from tnt_train.loop import Trainer
        trainer = Trainer(args, runtime, classes)
        if args.resume:
            trainer.resume(args.resume, args.resume_state)
        for line in args.preset_note + ((lr_note,) if lr_note and not args.eval_only else ()):
            trainer.log.log(line)
    except InputError as e:
        from tnt_train.claim import release
        release(args.output)
        if getattr(args, 'output_made', False) and os.path.isdir(args.output) and not os.listdir(args.output):
            os.rmdir(args.output)
        return bad_input(PROG, e)
    from tnt_train.data import reading_images
    try:
        with reading_images():
            if args.eval_only:
                r = trainer.evaluate()
            else:
                if runtime.is_main:
                    write_settings(args, os.path.join(args.output, SETTINGS))
                trainer.fit()
    except InputError as e:
        return bad_input(PROG, e)
    if args.eval_only:   # printed, and in train.log with the lines before it (rank 0)
        trainer.log.log(f"{args.model} on {args.data}/val: top-1 {r['top1']:.2f} top-5 {r['top5']:.2f} "
                        f"loss {r['loss']:.4f} ({r['count']} images)"
                        + (f", EMA top-1 {r['ema_top1']:.2f} top-5 {r['ema_top5']:.2f}" if 'ema_top1' in r else ''))
    if args.export:
        path = trainer.export()
        if path:
            print(f'exported {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
