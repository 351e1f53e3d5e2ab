"""msrun data parallelism on 2 CPU workers equals one process over the same global batch.

Both ranks must end with identical weights, and those must match a single process that
trains on batches of twice the size (each rank reads every other sample of the shuffled
order, so a global batch of the two ranks is the single process's batch). Training runs
on the eval transform (``--no-augment``) with drop path off, so no random draw differs.
"""
import os
import re
import socket
import subprocess
import sys

import pytest

from parity_tests.helpers import ROOT, SCRIPT, env, max_rel_diff, rows, train, weights

MSRUN = os.path.join(os.path.dirname(sys.executable), 'msrun')
ARGS = ['--epochs', 1, '--no-augment', '--drop-path', 0]
BOUND = 1e-4     # float summation order differs (all-reduce vs one batch); measured ~2e-6


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp('dp')
    logs = base / 'logs'
    proc = subprocess.run(
        [MSRUN, '--worker_num=2', '--local_worker_num=2',
         f'--master_port={free_port()}', f'--log_dir={logs}', '--join=True', SCRIPT, '--device', 'CPU',
         '--output', str(base / 'dp'), '--batch-size', '16', *map(str, ARGS)],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900)
    worker_logs = [(logs / f'worker_{r}.log').read_text() for r in range(2)]
    assert proc.returncode == 0, '\n'.join(w[-3000:] for w in worker_logs)
    train('--output', base / 'single', '--batch-size', 32, *ARGS)
    return base, worker_logs


def test_ranks_end_with_identical_weights(runs):
    from tnt_train.checkpoint import fingerprint
    base, worker_logs = runs
    prints = [re.findall(r'rank (\d): weights sha256 ([0-9a-f]{64})', log) for log in worker_logs]
    assert [p[0][0] for p in prints] == ['0', '1']
    assert prints[0][0][1] == prints[1][0][1]
    assert fingerprint(weights(base / 'dp' / 'model.ckpt')) == prints[0][0][1]


def test_data_parallel_matches_one_process_over_the_global_batch(runs):
    base, _ = runs
    dp, single = base / 'dp', base / 'single'
    assert max_rel_diff(weights(dp / 'model.ckpt'), weights(single / 'model.ckpt')) < BOUND
    dp_steps, single_steps = rows(dp / 'steps.csv'), rows(single / 'steps.csv')
    assert len(dp_steps) == len(single_steps) == 44      # rank 0 alone writes the records
    for a, b in zip(dp_steps, single_steps):             # the logged loss is the mean over both ranks
        assert abs(float(a['loss']) - float(b['loss'])) <= BOUND * abs(float(b['loss'])), (a, b)
    assert abs(float(rows(dp / 'metrics.csv')[0]['top1']) - float(rows(single / 'metrics.csv')[0]['top1'])) <= 0.3


def test_comparison_catches_a_rank_that_sees_half_the_batch(runs, tmp_path):
    """Planted fault: one process on batches of 16, i.e. one rank's share without the other's gradients."""
    base, _ = runs
    train('--output', tmp_path, '--batch-size', 16, *ARGS)
    assert max_rel_diff(weights(tmp_path / 'model.ckpt'), weights(base / 'single' / 'model.ckpt')) > 100 * BOUND
