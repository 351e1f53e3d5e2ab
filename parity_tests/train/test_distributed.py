"""msrun data parallelism on 2 CPU workers equals one process over the same global batch.

Both ranks must end with identical weights, and those must match a single process that
trains on batches of twice the size (each rank reads every other sample of the shuffled
order, so a global batch of the two ranks is the single process's batch). Training runs
on the eval transform (``--no-augment``) with drop path off, so no random draw differs.
The three runs are queued at the start of the session. The msrun workers first check the
``--dist-bn`` distribution of BatchNorm statistics (``DIST_BN``), then run train_ascend.py as
msrun runs it: one msrun for both (msrun's cluster start and end took 14 s on a quiet machine and
19 to 48 s beside a busy core, docs/parity.md).
"""
import os
import re
import socket
import sys

import pytest

from parity_tests.helpers import SCRIPT, Command, rows, started, train_command, weights
from tnt_common.compare import max_rel_err

MSRUN = os.path.join(os.path.dirname(sys.executable), 'msrun')
ARGS = ['--epochs', 1, '--no-augment', '--drop-path', 0]
BOUND = 1e-4     # float summation order differs (all-reduce vs one batch); measured ~2e-6


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# Each rank sets PyramidTNT-tiny's stem statistics and their EMA to values of its own, then
# distributes them as train_ascend.py does after an epoch (reduce, then broadcast); prints them,
# then runs the script of argv[1] with the rest of argv (the scheduler process never gets here).
DIST_BN = """
import json
import numpy as np
import mindspore as ms
import mindspore_tnt
from tnt_train.batchnorm import distributor, statistics
from tnt_train.device import setup
from tnt_train.ema import EMA
rt = setup('CPU')
net = mindspore_tnt.create_model('ptnt_tiny_patch16_64')
ema = EMA(net, 0.9)
stats = statistics(net) + [p for p in ema.shadow if p.name[len('ema.'):] in {q.name for q in statistics(net)}]
def own():
    for i, p in enumerate(stats):
        p.set_data(ms.Tensor(np.arange(p.shape[0], dtype=np.float32) * (i + 1) + 100 * rt.rank + 1))
    return {p.name: p.asnumpy().tolist() for p in stats}
out = {'own': own()}
for mode in ('reduce', 'broadcast'):
    own()
    distributor(net, ema, rt.world, mode)()
    out[mode] = {p.name: p.asnumpy().tolist() for p in stats}
print('RESULT ' + json.dumps(dict(out, rank=rt.rank)), flush=True)
import runpy, sys
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def start_commands(tmp_path_factory):
    """msrun over 2 ranks on batches of 16 (after ``DIST_BN``), one process on batches of 32 (the same
    global batch) and, the planted fault, one process on batches of 16."""
    base = tmp_path_factory.mktemp('dp')
    (base / 'dist_bn.py').write_text(DIST_BN)
    msrun = [MSRUN, '--worker_num=2', '--local_worker_num=2', f'--log_dir={base / "logs"}', '--join=True',
             base / 'dist_bn.py', SCRIPT, '--device', 'CPU', '--output', base / 'dp', '--batch-size', '16', *ARGS]
    return base, dict(dp=Command(lambda: [*msrun[:3], f'--master_port={free_port()}', *msrun[3:]]),
                      single=train_command('--output', base / 'single', '--batch-size', 32, *ARGS),
                      half=train_command('--output', base / 'half', '--batch-size', 16, *ARGS))


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    base, commands = started(start_commands, tmp_path_factory)
    code = commands['dp'].result(check=False).returncode
    worker_logs = [(base / 'logs' / f'worker_{r}.log').read_text() for r in range(2)]
    assert code == 0, '\n'.join(w[-3000:] for w in worker_logs)
    commands['single'].result()
    return base, worker_logs, commands


def test_ranks_end_with_identical_weights(runs):
    from tnt_train.checkpoint import fingerprint
    base, worker_logs, _ = runs
    prints = [re.findall(r'rank (\d): weights sha256 ([0-9a-f]{64})', log) for log in worker_logs]
    assert [p[0][0] for p in prints] == ['0', '1']
    assert prints[0][0][1] == prints[1][0][1]
    assert fingerprint(weights(base / 'dp' / 'model.ckpt')) == prints[0][0][1]


def step_mismatches(run, reference):
    """(column, step) of each logged loss and gradient norm of ``run`` beyond ``BOUND`` of ``reference``'s."""
    out = []
    for a, b in zip(rows(run / 'steps.csv'), rows(reference / 'steps.csv')):
        for key, printed in (('loss', 0.), ('grad_norm', 1e-4)):   # the norm is logged to 4 decimals: two
            x, y = float(a[key]), float(b[key])                      # roundings apart by up to 1e-4
            if abs(x - y) > BOUND * abs(y) + printed:
                out.append((key, a['global_step']))
    return out


def test_data_parallel_matches_one_process_over_the_global_batch(runs):
    base, _, _ = runs
    dp, single = base / 'dp', base / 'single'
    assert max_rel_err(weights(dp / 'model.ckpt'), weights(single / 'model.ckpt')) < BOUND
    assert len(rows(dp / 'steps.csv')) == len(rows(single / 'steps.csv')) == 44     # rank 0 alone writes the records
    assert step_mismatches(dp, single) == []    # the logged loss and gradient norm: of the mean over both ranks
    assert abs(float(rows(dp / 'metrics.csv')[0]['top1']) - float(rows(single / 'metrics.csv')[0]['top1'])) <= 0.3


def test_comparison_catches_a_rank_that_sees_half_the_batch(runs):
    """Planted fault: one process on batches of 16, i.e. one rank's share without the other's gradients."""
    base, _, commands = runs
    commands['half'].result()
    assert max_rel_err(weights(base / 'half' / 'model.ckpt'), weights(base / 'single' / 'model.ckpt')) > 100 * BOUND
    assert {key for key, _ in step_mismatches(base / 'half', base / 'single')} == {'loss', 'grad_norm'}


def same_on_every_rank(results, key):
    """Whether every rank holds the same ``results[rank][key]`` statistics."""
    return all(r[key] == results[0][key] for r in results[1:])


def test_batchnorm_statistics_are_distributed(runs):
    """``--dist-bn``: after the reduce every rank holds the mean of the ranks' statistics (the
    stem's and the EMA's), after the broadcast rank 0's; before, each its own."""
    import json
    import numpy as np
    _, logs, _ = runs
    results = [json.loads(log.split('RESULT ')[1].splitlines()[0]) for log in logs]
    assert [r['rank'] for r in results] == [0, 1]
    names = list(results[0]['own'])
    assert len(names) >= 4 and sum(n.startswith('ema.') for n in names) * 2 == len(names), names  # the stem's
    assert not same_on_every_rank(results, 'own')          # the check below fails without the distribution
    for name in names:
        mean = np.mean([r['own'][name] for r in results], axis=0)
        assert all(np.array_equal(r['reduce'][name], mean) for r in results), name
        assert all(r['broadcast'][name] == results[0]['own'][name] for r in results), name
