"""``tnt-parity --model ptnt_tiny_patch16_64``: PyramidTNT's stem, blocks and merges in the table.

The command runs queued (``helpers.Command``), as a user runs it, beside the tests before this one."""
import json
import sys

import torch

from parity.gradients import zero_gradient_scales
from tnt_common.pyramid import stage_names
from tnt_common.variants import model_args
from parity_tests.helpers import Command, started
from torch_ref.ptnt import create_model

NAME = 'ptnt_tiny_patch16_64'
STEM_BIASES = {f'patch_embed.{c}.bias': f'patch_embed.{c}.weight'
               for c in ('common_conv.0', 'inner_convs.0', 'outer_convs.0', 'outer_convs.3', 'outer_convs.6')}


def test_batchnorm_fed_biases():
    # the stem's convolutions feed BatchNorms; the merges' convolutions do not
    with torch.device('meta'):
        assert zero_gradient_scales(create_model(NAME)) == STEM_BIASES


def start_commands(tmp_path_factory):
    out = tmp_path_factory.mktemp('ptnt_parity') / 'report'
    return out, Command([sys.executable, '-m', 'parity.cli', '--model', NAME, '--output-dir', out])   # GRAPH mode


def test_report(tmp_path_factory):
    out, command = started(start_commands, tmp_path_factory)
    text = command.result().stdout
    names = stage_names(model_args(NAME)['depths'])
    assert names[0] == 'stem' and 'merge 3' in names
    for name in names:
        assert f'\n{name} ' in text, name
    assert '5 conv biases feed a BatchNorm' in text and '\nPASS\n' in text
    report = json.loads((out / f'parity_{NAME}_graph_fp32.json').read_text())
    assert report['passed'] and report['img_size'] == 64
    assert [r['stage'] for r in report['forward']['rows'][::2]] == names
    zero = [r for r in report['gradients']['rows'] if 'scale_of' in r]
    assert {r['name']: r['scale_of'] for r in zero} == STEM_BIASES
    assert report['gradients']['worst']['name'] not in STEM_BIASES
    assert '| merge 1 |' in (out / f'parity_{NAME}_graph_fp32.md').read_text()
