"""What every command shares: bad input is one line on stderr and exit status ``EXIT_BAD_INPUT``.

argparse's own usage errors follow the same rule (``Parser``), so a wrong flag and a wrong
file look alike to a script that calls the commands: ``PROG: error: MESSAGE``.
"""
import argparse
import signal
import sys

EXIT_BAD_INPUT = 2
# --device of every command: 'auto' picks Ascend, then GPU, then CPU
DEVICES = ('auto', 'Ascend', 'GPU', 'CPU')


def end_on_sigterm():
    """SIGTERM (kill, timeout, a job scheduler) ends the command as Ctrl-C does, through its
    ``finally`` blocks: no temporary of an output it was writing stays behind."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def bad_input(prog, message):
    """Print ``PROG: error: MESSAGE`` on one line; returns ``EXIT_BAD_INPUT``."""
    print(f'{prog}: error: {" ".join(str(message).split())}', file=sys.stderr)
    return EXIT_BAD_INPUT


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and ``EXIT_BAD_INPUT``, like every other bad input."""
    context = ''  # prefixed to errors: where the failing settings came from (a config file)

    def error(self, message):
        sys.exit(bad_input(self.prog, self.context + message))


def model_name(text):
    """argparse type of ``--model``: a variant, bare or tagged as timm's (``tnt_s_patch16_224.in1k``);
    its bare name (every variant has one tag, so the tag changes nothing it selects)."""
    from tnt_common.variants import split_tag
    try:
        return split_tag(text)[0]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model(ap, what):
    """``--model`` (``model_name``) on ``ap``, its help ``what`` and the variants."""
    from tnt_common.variants import list_models
    ap.add_argument('--model', type=model_name, metavar='NAME',
                    help=f'{what}; bare or tagged (tnt_s_patch16_224.in1k): {", ".join(list_models(None))}')


def parser(prog, doc, formatter=argparse.RawDescriptionHelpFormatter):
    """A ``Parser`` whose description is ``doc`` (its examples included, as written)."""
    return Parser(prog=prog, description=doc, formatter_class=formatter)
