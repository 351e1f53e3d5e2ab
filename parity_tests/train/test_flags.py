"""The command line in timm's words: each timm flag reaches the setting of our own flag, ``--lr``
is absolute and ``--lr-base`` scaled, ``-c FILE.yaml`` sets what flags set (flags win), and
the preset a run uses is chosen visibly."""
import os

import pytest
import yaml

import train_ascend
from parity_tests.helpers import ROOT, rows, started, train_command

DATA = '/data/imagenet'      # parsing does not look at the folder
CONFIGS = os.path.join(ROOT, 'configs')

# The recipe as docs/training.md spells it out, in timm's flags.
RECIPE_FLAGS = [
    '--model', 'tnt_s_patch16_224', '--img-size', 224, '--epochs', 300, '-b', 128, '--lr-base', 1e-3,
    '--lr-base-size', 1024, '--warmup-epochs', 5, '--warmup-lr', 1e-6, '--min-lr', 1e-5, '--weight-decay', 0.05,
    '--opt-eps', 1e-8, '--clip-grad', 5, '--drop-path', 0.1, '--smoothing', 0.1, '--mixup', 0.8, '--cutmix', 1.0,
    '--aa', 'rand-m9-mstd0.5-inc1', '--reprob', 0.25, '--hflip', 0.5, '--scale', 0.08, 1, '--aug-repeats', 3,
    '--model-ema', '--model-ema-decay', 0.99996, '--amp', 'O2', '--loss-scale', 16777216,
    '--loss-scale-window', 2000, '-j', 8, '--save-every', 2000]


def settings(*argv):
    return vars(train_ascend.parse_args([str(a) for a in argv]))


def without(got, *keys):
    """``got`` without ``keys`` and where its settings came from (``output_given``)."""
    return {k: v for k, v in got.items() if k not in keys + ('output_given',)}


def write(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return path


# (other flags, timm's, ours, dest, value): the value differs from what the other flags give.
ALIASES = [
    ([], ['--aa', 'rand-m7-mstd0.5'], ['--rand-augment', 'rand-m7-mstd0.5'], 'aa', 'rand-m7-mstd0.5'),
    ([], ['--aug-repeats', 2], ['--repeated-aug', 2], 'aug_repeats', 2),
    ([], ['--model-ema'], ['--ema'], 'model_ema', True),
    (['--data', DATA], ['--no-model-ema'], ['--no-ema'], 'model_ema', False),
    ([], ['--model-ema-decay', 0.999], ['--ema-decay', 0.999], 'model_ema_decay', 0.999),
    ([], ['--checkpoint-hist', 5], ['--keep-checkpoints', 5], 'checkpoint_hist', 5),
    ([], ['--scale', 0.3, 1], ['--scale-min', 0.3], 'scale', (0.3, 1.)),
    ([], ['-b', 16], ['--batch-size', 16], 'batch_size', 16),
    ([], ['-j', 3], ['--workers', 3], 'workers', 3),
    ([], ['-vb', 10], ['--eval-batch-size', 10], 'validation_batch_size', 10),
    ([], ['--lr-base-size', 256], ['--lr-base-batch', 256], 'lr_base_size', 256),
    ([], ['--no-aug'], ['--no-augment'], 'no_aug', True),
    ([], ['--data-dir', DATA], ['--data', DATA], 'data', DATA),
    ([], ['--amp'], ['--amp', 'O2'], 'amp', 'O2'),
]


@pytest.mark.parametrize('base, timm, ours, dest, value', ALIASES, ids=[a[1][0] for a in ALIASES])
def test_timm_flag_reaches_our_setting(base, timm, ours, dest, value):
    got = settings(*base, *timm)
    assert got == settings(*base, *ours)
    assert got[dest] == value != settings(*base)[dest]


def test_new_timm_settings():
    got = settings('--initial-checkpoint', 'w.pth', '--mixup-switch-prob', 0.3, '--scale', 0.2, 0.9)
    assert got['initial_checkpoint'] == 'w.pth' and got['pretrained'] is False
    assert got['mixup_switch_prob'] == 0.3 and settings()['mixup_switch_prob'] == 0.5
    assert got['scale'] == (0.2, 0.9)
    assert settings('--scale', 0.2, 0.9, '--scale-min', 0.4)['scale'] == (0.4, 0.9)   # the upper bound stays


@pytest.mark.parametrize('argv, world, want', [
    (['--lr', 0.01, '-b', 32], 2, 0.01),                                     # absolute: not scaled
    (['--lr-base', 1e-3, '--lr-base-size', 256, '-b', 32], 2, 1e-3 * 64 / 256),
    (['--lr-base', 1e-3, '--lr-base-size', 256, '--lr-base-scale', 'sqrt', '-b', 32], 2, 1e-3 * 0.5),
    ([], 1, 2e-3),                                                           # digits: 2e-3 per 64, batch 64
    (['-b', 32], 1, 1e-3),
    (['--data', DATA], 8, 1e-3),                                             # recipe: 1e-3 per 1024, 8 x 128
    (['--data', DATA, '--lr', 5e-4], 8, 5e-4),
])
def test_peak_lr(argv, world, want):
    lr, note = train_ascend.peak_lr(train_ascend.parse_args([str(a) for a in argv]), world)
    assert lr == pytest.approx(want, rel=1e-12)
    assert (note is None) == ('--lr' in argv)


@pytest.mark.parametrize('argv, preset, why', [
    ([], 'digits', 'no --data given'),
    (['--data', DATA], 'imagenet', '--data given'),
    (['--preset', 'imagenet'], 'imagenet', '--preset given'),
    (['--preset', 'digits', '--data', DATA], 'digits', '--preset given'),
])
def test_preset_is_chosen_visibly(argv, preset, why):
    args = train_ascend.parse_args(argv)
    assert args.preset == preset and args.preset_note[0] == f'preset {preset}: {why}'
    assert args.model == train_ascend.PRESETS[preset]['model']
    assert f"--model {args.model}" in args.preset_note[1]


def test_help_shows_every_group_and_an_example_per_use(capsys):
    with pytest.raises(SystemExit) as e:
        train_ascend.parse_args(['--help'])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for group in ('config and preset', 'data and model', 'device', 'optimisation', 'augmentation', 'run'):
        assert f'\n{group}:\n' in out
    for example in ('python train_ascend.py  ', 'train_ascend.py --data /data/imagenet',
                    '-c configs/tnt_s_imagenet.yaml', '-c configs/finetune.yaml', '--eval-only --initial-checkpoint',
                    '--resume runs/digits', 'msrun'):
        assert example in out, example


def test_config_keys_are_dest_names_or_our_flag_names(tmp_path):
    cfg = write(tmp_path / 'c.yaml', {'batch_size': 16, 'aa': 'rand-m7', 'model_ema': True, 'scale': [0.3, 0.9],
                                      'lr': 0.01, 'no_aug': True, 'keep_checkpoints': 4, 'data_dir': DATA})
    flags = ['-b', 16, '--aa', 'rand-m7', '--model-ema', '--scale', 0.3, 0.9, '--lr', 0.01, '--no-aug',
             '--checkpoint-hist', 4, '--data', DATA]
    got = settings('-c', cfg)
    assert without(got, 'config', 'preset_note') == without(settings(*flags), 'config', 'preset_note')
    assert got['preset_note'][0] == f'preset imagenet: data set in {cfg}'


def test_command_line_overrides_config(tmp_path):
    cfg = write(tmp_path / 'c.yaml', {'batch_size': 16, 'scale': [0.3, 0.9], 'model_ema': True, 'epochs': 3,
                                      'preset': 'imagenet'})
    got = settings('-c', cfg, '-b', 8, '--scale-min', 0.2, '--no-ema', '--preset', 'digits')
    assert (got['batch_size'], got['scale'], got['model_ema'], got['epochs']) == (8, (0.2, 0.9), False, 3)
    assert got['preset_note'][0] == 'preset digits: --preset given'
    assert settings('-c', cfg)['preset_note'][0] == f'preset imagenet: set in {cfg}'


def test_shipped_configs_spell_out_the_presets():
    digits = settings('-c', os.path.join(CONFIGS, 'digits.yaml'))
    assert without(digits, 'config', 'preset_note') == without(settings(), 'config', 'preset_note')
    recipe = settings('-c', os.path.join(CONFIGS, 'tnt_s_imagenet.yaml'), '--data', DATA)
    spelled = settings('--data', DATA, '--output', 'runs/tnt_s', *RECIPE_FLAGS)
    assert without(recipe, 'config', 'preset_note') == without(spelled, 'config', 'preset_note')
    preset = settings('--data', DATA)
    assert {k: recipe[k] for k in train_ascend.PRESETS['imagenet'] if k != 'output'} == \
        {k: preset[k] for k in train_ascend.PRESETS['imagenet'] if k != 'output'}


def test_finetune_config():
    args = train_ascend.parse_args(['-c', os.path.join(CONFIGS, 'finetune.yaml'), '--data', DATA,
                                    '--initial-checkpoint', 'tnt_s_patch16_224.pth', '--num-classes', 102])
    assert (args.model, args.num_classes) == ('tnt_s_patch16_224', 102)
    assert args.initial_checkpoint == 'tnt_s_patch16_224.pth'
    assert (args.epochs, args.aug_repeats, args.model_ema, args.aa) == (30, 0, False, 'rand-m9-mstd0.5-inc1')
    assert train_ascend.peak_lr(args, 1)[0] == pytest.approx(1e-4 * 64 / 512)


def start_commands(tmp_path_factory):
    """A short digits run from a YAML file in timm's names (its epochs overridden on the command
    line) and one from our own flags, queued at the start of the session."""
    d = tmp_path_factory.mktemp('flags')
    cfg = write(d / 'run.yaml', {
        'epochs': 3, 'batch_size': 48, 'lr': 3.0e-3, 'warmup_epochs': 0, 'aa': 'rand-m5-mstd0.5',
        'scale': [0.6, 1.0], 'mixup': 0.2, 'cutmix': 0.5, 'mixup_switch_prob': 0.3, 'model_ema': True,
        'model_ema_decay': 0.99, 'checkpoint_hist': 1, 'workers': 1})
    return d, dict(
        yaml=train_command('-c', cfg, '--epochs', 1, '--output', d / 'yaml'),
        flags=train_command('--epochs', 1, '--batch-size', 48, '--lr', 3e-3, '--warmup-epochs', 0,
                            '--rand-augment', 'rand-m5-mstd0.5', '--scale-min', 0.6, '--mixup', 0.2, '--cutmix', 0.5,
                            '--mixup-switch-prob', 0.3, '--ema', '--ema-decay', 0.99, '--keep-checkpoints', 1,
                            '--workers', 1, '--output', d / 'flags'))


def test_config_and_command_line_train_alike(tmp_path_factory):
    """The two runs of ``start_commands`` take the same steps."""
    d, runs = started(start_commands, tmp_path_factory)
    from_yaml = runs['yaml'].result()
    runs['flags'].result()
    steps = {run: [without(r, 'step_ms') for r in rows(d / run / 'steps.csv')] for run in ('yaml', 'flags')}
    assert steps['yaml'] == steps['flags']
    assert len(steps['yaml']) == 1437 // 48                       # one epoch: the command line won
    assert float(steps['yaml'][0]['lr']) == pytest.approx(3e-3)   # --lr is the peak LR, not scaled by the batch
    epochs = [rows(d / run / 'metrics.csv') for run in ('yaml', 'flags')]
    assert [(r['top1'], r['ema_top1']) for r in epochs[0]] == [(r['top1'], r['ema_top1']) for r in epochs[1]]
    assert sorted(os.listdir(d / 'yaml' / 'checkpoints')) == ['best.ckpt', 'epoch0001_step00000029.ckpt']
    log = (d / 'yaml' / 'train.log').read_text()
    for line in ('preset digits: no --data given', 'preset digits sets --model tnt_tiny_patch16_64 --img-size 32'):
        assert line in from_yaml.stdout and line in log
