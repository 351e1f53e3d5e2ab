"""What the commands share: one vocabulary of flags, one exit code for bad input, model loading.

Every command names the same thing the same way: the weights file is the positional
``CHECKPOINT`` (any file or hub folder ``convert`` reads), ``--model`` forces a variant,
``--numerics`` overrides the file's numerics, ``--img-size`` the input size,
``--framework mindspore|torch`` picks the implementation, ``--device auto|Ascend|GPU|CPU``
and ``--amp O0|O2|O3`` the hardware and precision, ``-b/--batch-size`` and
``-j/--workers`` the data pipeline. Bad input of any kind (arguments, files, data) prints
one line ``PROG: error: MESSAGE`` on stderr and exits with ``tnt_common.cli.EXIT_BAD_INPUT``.
"""
from tnt_common.cli import DEVICES, add_model, bad_input, end_on_sigterm
from tnt_common.numerics import PRESETS

FRAMEWORKS = ('mindspore', 'torch')
AMP_LEVELS = ('O0', 'O2', 'O3')


class BadInput(ValueError):
    """Bad command-line input, file or data: reported in one line, exit ``EXIT_BAD_INPUT``."""


def add_checkpoint_args(ap):
    ap.add_argument('checkpoint', metavar='CHECKPOINT',
                    help='weights: any file or hub folder tnt-convert reads (timm, official, mmpretrain, MindCV, '
                         'model zoo, mindspore_tnt)')
    add_model(ap, 'variant, TNT or PyramidTNT (default: detected from the checkpoint)')
    ap.add_argument('--numerics', metavar='|'.join(PRESETS),
                    help="GELU form and LayerNorm eps (default: the checkpoint's); also "
                         'gelu=erf|tanh,norm_eps=X,final_norm_eps=Y')
    ap.add_argument('--img-size', type=int, help="input size (default: the checkpoint's)")


def add_framework_args(ap, amp=True):
    ap.add_argument('--framework', choices=FRAMEWORKS, default='mindspore',
                    help='run mindspore_tnt (default) or the torch_ref reference on the same file')
    ap.add_argument('--device', choices=DEVICES, default='auto',
                    help='MindSpore device (auto: Ascend, then GPU, then CPU); torch runs on CPU')
    if amp:
        ap.add_argument('--amp', choices=AMP_LEVELS, default='O0',
                        help='MindSpore mixed precision: O0 fp32, O2 fp16 matmuls, O3 fp16')


def setup_mindspore(device, pynative=False):
    """Select the MindSpore device ('auto' picks the best available) and mode; returns the device."""
    from tnt_train.device import setup
    from tnt_train.errors import InputError
    try:
        return setup(device, pynative).device
    except InputError as e:
        raise BadInput(str(e)) from None


def load(args, framework=None):
    """(model in eval mode, ``convert`` Canonical) of ``args.checkpoint`` in ``framework``."""
    from convert import ConversionError
    from convert.api import load_model
    framework = framework or args.framework
    try:
        model, can = load_model(args.checkpoint, framework, args.model, img_size=args.img_size, numerics=args.numerics)
    except (ConversionError, OSError) as e:
        raise BadInput(str(e)) from None
    if framework == 'mindspore':
        model.set_train(False)
    else:
        model.eval()
    return model, can


def run(prog, main, argv=None):
    """``main(argv)`` with every ``BadInput`` (and the converters' errors) as one line and exit 2."""
    from convert import ConversionError
    end_on_sigterm()
    try:
        return main(argv)
    except (BadInput, ConversionError, OSError) as e:   # OSError: a file not there, or an output not written
        return bad_input(prog, e)
