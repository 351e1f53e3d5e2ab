"""Bad input: a one-line error, exit status 2, before any training, and nothing half-written.

Every refused run is queued at the start of the session (``start_commands``), each in a
folder of its own where its inputs were made; the tests read what the runs printed and left.
"""
import os
import re

import pytest

from parity_tests.helpers import ROOT, cut_jpeg, started, train_command
from tnt_train.data import export_digits

DAMAGES = ['garbage', 'truncated', 'flipped byte']
CONFIGS = [
    ('batch_sise: 32\n', "unknown key 'batch_sise' (did you mean 'batch_size'?)"),
    ('batch_size: many\n', "argument -b/--batch-size: invalid int value: 'many'"),
    ('model_ema: 3\n', 'model_ema is a switch: true or false, not 3'),
    ('- batch_size\n', 'not a mapping of settings (key: value)'),
    ('aa: [rand\n', 'not valid YAML (line 2)'),
    (None, 'cannot read it (No such file or directory)'),
]
TIMM_SETTINGS = [
    (['--aa', 'augmix-m5'], '--aa: RandAugment config must start with "rand": \'augmix-m5\''),
    (['--scale', 0.9, 0.5], '--scale 0.9 0.5: needs 0 < MIN <= MAX'),
    (['--mixup-switch-prob', 1.5], '--mixup-switch-prob 1.5 is not a probability'),
]
CHECKPOINT = 'epoch0001_step00000022.ckpt'
HUB = ('train_ascend.py: error: --pretrained downloads weights from a model hub, which this trainer does not do; '
       'pass --initial-checkpoint FILE')


def damaged_checkpoint(path, damage):
    """A training checkpoint written at ``path``, then spoilt by ``damage``."""
    import mindspore as ms
    from tnt_train.checkpoint import save_training_state
    params = [ms.Parameter(ms.Tensor([[1., 2.], [3., 4.]] * 500), name='w'), ms.Parameter(ms.Tensor(0), name='s')]
    save_training_state(params, str(path), {'epoch': 1})
    data = path.read_bytes()
    half = len(data) // 2
    path.write_bytes({'garbage': b'not a checkpoint at all', 'truncated': data[:half],
                      'flipped byte': data[:half] + bytes([data[half] ^ 0xFF]) + data[half + 1:]}[damage])
    return path


def folder(path):
    path.mkdir(parents=True)
    return path


def data_folders(d):
    """A data folder whose class folders hold no image."""
    for split in ('train', 'val'):
        folder(d / 'images' / split / 'cat')
    return d / 'images'


def written(path, text):
    path.write_text(text)
    return path


def start_commands(tmp_path_factory):
    """{case: (its folder, [its queued runs])}: each case's function of a new folder makes the
    case's inputs there and gives the arguments of its runs."""
    cases = {
        'missing data': lambda d: [['--data', d / 'nowhere', '--output', d / 'out']],
        'empty data': lambda d: [['--data', folder(d / 'data'), '--output', d / 'out']],
        'data without images': lambda d: [['--data', data_folders(d), '--output', d / 'out']],
        'class count': lambda d: [['--num-classes', 5, '--output', d / 'out']],
        'unwritable output': lambda d: [['--output', written(d / 'file', 'not a folder') / 'run']],
        'no checkpoint': lambda d: [['--resume', d, '--output', d / 'out']],
        'batch too large': lambda d: [['-b', 100000, '--output', d / 'out']],
        'pretrained': lambda d: [['--pretrained', '--output', d / 'out'],
                                 ['--pretrained', d / 'weights.pth', '--output', d / 'out'],
                                 ['-c', written(d / 'c.yaml', 'pretrained: true\n'), '--output', d / 'out']],
        **{damage: lambda d, damage=damage: [['--resume', damaged_checkpoint(d / CHECKPOINT, damage),
                                              '--output', d / 'out']] for damage in DAMAGES},
        **{f'config {i}': lambda d, text=text: [['-c', d / 'c.yaml' if text is None else written(d / 'c.yaml', text),
                                                  '--output', d / 'out']] for i, (text, _) in enumerate(CONFIGS)},
        **{f'timm {i}': lambda d, args=args: [[*args, '--output', d / 'out']]
           for i, (args, _) in enumerate(TIMM_SETTINGS)},
    }
    runs = {}
    for name, runs_of in cases.items():
        d = tmp_path_factory.mktemp('refused')
        runs[name] = d, [train_command(*argv) for argv in runs_of(d)]
    for name, damage in (('undecodable image', lambda p: written(p, 'not a JPEG')), ('cut JPEG', cut_jpeg)):
        d = tmp_path_factory.mktemp('undecodable')     # run in its folder, where MindSpore dumps the image
        runs[name] = d, [train_command('--data', undecodable_images(d, damage), '--output', d / 'out', cwd=d)]
    return runs


def undecodable_images(d, damage):
    """The digits with one file in each train class named .jpg and made by ``damage(path)``."""
    import shutil
    data = shutil.copytree(export_digits(), d / 'data')
    for c in os.listdir(data / 'train'):
        damage(data / 'train' / c / 'broken.jpg')
    return data


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    return started(start_commands, tmp_path_factory)


def refused(runs, name):
    """(the case's folder, the one error line of each of its runs)."""
    d, commands = runs[name]
    errors = []
    for command in commands:
        proc = command.result(check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, lines)
        assert lines[0].startswith('train_ascend.py: error: '), lines
        assert 'Traceback' not in proc.stdout + proc.stderr
        errors.append(lines[0])
    return d, errors


def test_undecodable_image(runs):
    """One line of ours after MindSpore's log lines, exit 2, and no copy of the image left where the
    run was started (MindSpore's Decode writes one there)."""
    d, [command] = runs['undecodable image']
    proc = command.result(check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith('train_ascend.py: error: reading the images failed: map operation: [Decode] failed. ') \
        and line.endswith('Decode: image decode failed.'), line
    assert sorted(os.listdir(d)) == ['data', 'out']


def test_cut_jpeg(runs):
    """A JPEG that ends before its scan (MindSpore's Decode dies of SIGFPE on it) is found first."""
    d, [command] = runs['cut JPEG']
    proc = command.result(check=False)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and re.fullmatch(
        f"train_ascend.py: error: reading the images failed: {d / 'data' / 'train'}/[0-9]/broken.jpg is a damaged "
        'JPEG: it ends before its image data', line), (proc.returncode, proc.stderr[-2000:])


def test_missing_data_folder(runs):
    d, [msg] = refused(runs, 'missing data')
    assert msg == f'train_ascend.py: error: data folder {d / "nowhere"} does not exist'


def test_empty_data_folders(runs):
    d, [msg] = refused(runs, 'empty data')
    assert msg == f'train_ascend.py: error: data folder {d / "data" / "val"} does not exist'
    d, [msg] = refused(runs, 'data without images')
    assert msg == f'train_ascend.py: error: data folder {d / "images" / "val"} holds no images (.jpg, .jpeg, .png, .bmp, .tif, .tiff)'


def test_class_count_mismatch_with_data(runs):
    _, [msg] = refused(runs, 'class count')
    assert msg == f'train_ascend.py: error: --num-classes 5 but {export_digits()} has 10 classes'


def test_unwritable_output_folder(runs):
    d, [msg] = refused(runs, 'unwritable output')
    assert msg.startswith(f'train_ascend.py: error: output folder {d / "file" / "run"} is not writable')


@pytest.mark.parametrize('damage', DAMAGES)
def test_corrupt_checkpoint_on_resume(runs, damage):
    d, [msg] = refused(runs, damage)
    good = d / CHECKPOINT
    assert msg == f'train_ascend.py: error: checkpoint {good} is corrupt or not a training checkpoint (ValueError)'
    assert not (d / 'out').exists()          # nothing was written


def test_refused_after_the_model_is_built_leaves_no_folder(runs):
    d, [msg] = refused(runs, 'batch too large')
    assert msg == (f'train_ascend.py: error: --batch-size 100000 is larger than the {export_digits()}/train '
                   f'images one rank reads per epoch')
    assert not (d / 'out').exists()


def test_resume_from_a_folder_without_checkpoints(runs):
    d, [msg] = refused(runs, 'no checkpoint')
    assert msg == f'train_ascend.py: error: no checkpoint found in {d}'


def test_pretrained_is_timms_hub_switch(runs):
    d, msgs = refused(runs, 'pretrained')
    # a file after --pretrained goes elsewhere; in a config the switch is refused the same way
    assert msgs == [HUB, HUB, HUB.replace('error: ', f'error: config {d / "c.yaml"}: ')]
    assert not (d / 'out').exists()


@pytest.mark.parametrize('i', range(len(CONFIGS)), ids=[m for _, m in CONFIGS])
def test_bad_config(runs, i):
    d, [msg] = refused(runs, f'config {i}')
    assert msg == f'train_ascend.py: error: config {d / "c.yaml"}: {CONFIGS[i][1]}'


@pytest.mark.parametrize('i', range(len(TIMM_SETTINGS)), ids=[m for _, m in TIMM_SETTINGS])
def test_bad_timm_settings(runs, i):
    _, [msg] = refused(runs, f'timm {i}')
    assert msg == f'train_ascend.py: error: {TIMM_SETTINGS[i][1]}'


# Settings out of their range, refused in-process before the device is set up: (argv, message)
RANGES = [
    (['--seed', -1], '--seed -1 must not be negative'),
    (['--save-every', -1], '--save-every -1 must not be negative'),
    (['--lr-base-size', 0], '--lr-base-size 0 must be at least 1'),
    (['-vb', 0], '--validation-batch-size 0 must be at least 1'),
    (['--loss-scale-window', 0], '--loss-scale-window 0 must be at least 1'),
    (['--hflip', 1.5], '--hflip 1.5 is not a probability'),
    (['--drop-path', 1], '--drop-path 1 must be in [0, 1)'),
    (['--crop-pct', 0], '--crop-pct 0 must be in (0, 1]'),
    (['--lr', 0], '--lr 0 must be positive'),
    (['--warmup-epochs', 'inf'], '--warmup-epochs inf is not a finite number'),
    (['--img-size', 0], '--img-size 0 is not a positive multiple of the patch size 16 of tnt_tiny_patch16_64'),
]


def refusal(argv):
    """The message of ``train_ascend.check_args`` refusing ``argv`` (the checks ``main`` runs first)."""
    import train_ascend
    from tnt_train.errors import InputError
    with pytest.raises(InputError) as refused:
        train_ascend.check_args(train_ascend.parse_args([str(a) for a in argv]))
    return str(refused.value)


@pytest.mark.parametrize('argv, message', RANGES, ids=[m for _, m in RANGES])
def test_settings_out_of_range(argv, message, tmp_path):
    assert refusal([*argv, '--output', tmp_path / 'out']) == message
    assert not (tmp_path / 'out').exists()


def test_output_holding_another_run(tmp_path, monkeypatch):
    """A new run never writes into another run's folder: --output is refused, the preset's folder
    gives way to the next free ``-N``."""
    import train_ascend
    monkeypatch.chdir(tmp_path)
    for run in ('runs/digits', 'runs/digits-1'):
        folder(tmp_path / run / 'checkpoints')
        (tmp_path / run / 'checkpoints' / CHECKPOINT).write_bytes(b'an earlier run')
    assert refusal(['--output', 'runs/digits']) == (
        'runs/digits holds the checkpoints of another run: continue it with --resume runs/digits, '
        'or choose another --output')
    assert os.listdir(tmp_path / 'runs' / 'digits') == ['checkpoints']
    args = train_ascend.parse_args([])
    train_ascend.check_args(args)
    assert args.output == 'runs/digits-2' and (tmp_path / 'runs' / 'digits-2').is_dir()
    assert args.preset_note[-1] == 'output runs/digits-2: runs/digits holds the checkpoints of another run'
    args = train_ascend.parse_args(['-c', os.path.join(ROOT, 'configs', 'digits.yaml')])
    train_ascend.check_args(args)       # the config's output is no more given than the preset's
    assert args.output == 'runs/digits-2'


def test_a_folder_another_run_writes_into(tmp_path, monkeypatch):
    """A run started while another writes into the preset's folder takes the next free ``-N``;
    ``--output`` of that folder is refused; once the other run has ended (or was killed), the
    folder is free."""
    import signal
    import socket
    import subprocess
    import sys
    import train_ascend
    from tnt_train.claim import NAME
    monkeypatch.chdir(tmp_path)
    holding = ("import sys; from tnt_train.claim import claim; print(claim('runs/digits'), flush=True); "
               "sys.stdin.read()")
    other = subprocess.Popen([sys.executable, '-c', holding], cwd=tmp_path, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert other.stdout.readline() == 'True\n'
    args = train_ascend.parse_args([])
    train_ascend.check_args(args)
    assert args.output == 'runs/digits-1'
    held = f'process {other.pid} on {socket.gethostname()}'
    assert args.preset_note[-1] == f'output runs/digits-1: runs/digits is in use by another run ({held})'
    assert refusal(['--output', 'runs/digits']) == (
        f'runs/digits is in use by another run ({held}): wait for it to end, or choose another --output')
    other.communicate('')               # ends, removing its claim
    assert not (tmp_path / 'runs' / 'digits' / NAME).exists()
    args = train_ascend.parse_args(['--output', 'runs/digits'])
    train_ascend.check_args(args)
    assert args.output == 'runs/digits'
    killed = subprocess.Popen([sys.executable, '-c', holding.replace('runs/digits', 'runs/killed')], cwd=tmp_path,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT))
    assert killed.stdout.readline() == 'True\n'
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert (tmp_path / 'runs' / 'killed' / NAME).exists()      # left behind, holding nothing
    args = train_ascend.parse_args(['--output', 'runs/killed'])
    train_ascend.check_args(args)
    assert args.output == 'runs/killed'
    # a claim made on another host (a shared file system) holds the folder: its process cannot be seen
    claimed = tmp_path / 'runs' / 'elsewhere' / NAME
    claimed.parent.mkdir()
    claimed.write_text('process 7 on node-b\n7\nnode-b\n')
    assert refusal(['--output', 'runs/elsewhere']) == ('runs/elsewhere is in use by another run (process 7 on '
                                                       'node-b): wait for it to end, or choose another --output')
    claimed.write_text('msrun job 10.0.0.2:8118\n7\nnode-b\n')      # ranks on two nodes: one job
    monkeypatch.setenv('MS_ROLE', 'MS_WORKER')
    monkeypatch.setenv('MS_SCHED_HOST', '10.0.0.2')
    monkeypatch.setenv('MS_SCHED_PORT', '8118')
    args = train_ascend.parse_args(['--output', 'runs/elsewhere'])
    train_ascend.check_args(args)
    assert args.output == 'runs/elsewhere'


def test_resume_writes_into_the_resumed_run(tmp_path):
    import mindspore as ms
    import train_ascend
    from tnt_train.checkpoint import save_training_state
    path = folder(tmp_path / 'run' / 'checkpoints') / CHECKPOINT
    save_training_state([ms.Parameter(ms.Tensor([1.]), name='w')], str(path), {'epoch': 1, 'global_step': 22})
    args = train_ascend.parse_args(['--resume', path])
    train_ascend.check_args(args)
    assert args.output == str(tmp_path / 'run')


def test_eval_only_evaluates_no_copy_as_ema():
    import train_ascend
    assert train_ascend.parse_args(['--data', '/nowhere']).model_ema        # the ImageNet preset's EMA
    args = train_ascend.parse_args(['--data', '/nowhere', '--eval-only', '--initial-checkpoint', 'w.ckpt'])
    assert not args.model_ema and args.preset_note[-1] == '--eval-only without --resume: no EMA weights to evaluate'


def test_a_resume_drops_the_checkpoints_after_it(tmp_path):
    """Checkpoints written after the one resumed from (by the run that went on from it) are removed,
    best.ckpt too if it is one of them: kept, they would outrank the resumed run's own."""
    import mindspore as ms
    from tnt_train.checkpoint import CheckpointManager, checkpoints_in
    manager = CheckpointManager(tmp_path, keep=3)
    params = [ms.Parameter(ms.Tensor([1.]), name='w')]
    for step in (10, 20, 30):
        manager.save(params, {'epoch': 0, 'global_step': step})
    manager.save_best(params, {'epoch': 0, 'global_step': 30})
    stale, own = '.epoch0000_step00000040.ckpt.tmp-x.ckpt', '.notes.tmp-keep'   # a killed write; a user's file
    for name in (stale, own):
        (tmp_path / 'checkpoints' / name).write_text('x')
    names = lambda paths: [os.path.basename(p) for p in paths]   # noqa: E731
    assert names(manager.start(resumed_at=20)) == ['epoch0000_step00000030.ckpt', 'best.ckpt']
    assert sorted(f for f in os.listdir(manager.folder) if f.startswith('.')) == [own]
    manager.save(params, {'epoch': 0, 'global_step': 25})
    assert names(checkpoints_in(manager.folder)) == [
        'epoch0000_step00000010.ckpt', 'epoch0000_step00000020.ckpt', 'epoch0000_step00000025.ckpt']
    manager.save_best(params, {'epoch': 0, 'global_step': 25})
    assert manager.drop_after(25) == [] and os.path.isfile(manager.folder + '/best.ckpt')
