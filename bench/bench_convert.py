"""TNT-B checkpoint conversion: time and peak memory of ``tnt-convert`` next to the floor.

The floor is what any converter must do: read the source file and write the same number
of bytes (``f.read()`` of the whole file, then one ``write``). Every measurement runs in a
fresh subprocess that reports its own wall time and peak RSS (``VmHWM`` of
``/proc/self/status``: unlike ``ru_maxrss`` it is not inherited from the parent):

- ``floor``: the read + write above;
- ``convert``: ``convert.files.convert_file(..., verify=False)``; its time is shown with
  and without the one-off ``import torch`` (needed to unpickle torch files);
- ``verify``: the same conversion with verification on (both models built, a batch of
  two through each), reported separately: it is not part of the conversion's budget.

Both directions are measured: torch ``.pth`` (timm layout) -> MindSpore ``.ckpt``, and
back. Floor and conversion run ``--repeat`` times each and the fastest run
of each is shown. Goals: conversion time <= 1.5x the floor, peak RSS <= 2.5x the checkpoint size.

    python bench/bench_convert.py [--model tnt_b_patch16_224] [--keep DIR]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PEAK_RSS = '''
def peak_rss():
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmHWM:'))
'''

FLOOR = PEAK_RSS + '''
import json, sys, time
t0 = time.perf_counter()
with open(sys.argv[1], 'rb') as f:
    data = f.read()
with open(sys.argv[2], 'wb') as f:
    f.write(data)
t = time.perf_counter() - t0
print(json.dumps(dict(seconds=t, import_seconds=0., rss=peak_rss())))
'''

CONVERT = PEAK_RSS + '''
import json, sys, time
t0 = time.perf_counter()
if sys.argv[1].endswith('.pth') or sys.argv[2].endswith('.pth'):
    import torch  # what reading a torch file costs once; timed apart
t_import = time.perf_counter() - t0
from convert.files import convert_file
r = convert_file(sys.argv[1], sys.argv[2], verify=sys.argv[3] == '1', force=True)
t = time.perf_counter() - t0
print(json.dumps(dict(seconds=t, import_seconds=t_import, verify_seconds=r.get('verification', {}).get('seconds', 0.),
                      passed=r.get('verification', {}).get('passed'),
                      rss=peak_rss())))
'''


def run(code, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    t0 = _now()
    p = subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True,
                       env=env, cwd=ROOT)
    wall = _now() - t0
    if p.returncode:
        sys.exit(p.stderr[-2000:])
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out['process_seconds'] = wall
    return out


def best(repeat, code, *args):
    """The fastest of ``repeat`` runs (the machine is shared: slower runs measure others' load)."""
    return min((run(code, *args) for _ in range(repeat)), key=lambda r: r['seconds'])


def _now():
    import time
    return time.perf_counter()


def make_source(name, path):
    import torch
    import torch_ref
    from tnt_common.fixtures import random_timm_weights
    shapes = {k: tuple(v.shape) for k, v in torch_ref.create_model(name).state_dict().items()}
    torch.save({k: torch.from_numpy(v) for k, v in random_timm_weights(shapes).items()}, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', default='tnt_b_patch16_224')
    ap.add_argument('--repeat', type=int, default=5, help='runs of floor and conversion; the fastest is shown')
    ap.add_argument('--keep', help='directory for the files (default: a temporary one, removed)')
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.keep) as d:
        pth, ckpt, back = (os.path.join(d, n) for n in ('src.pth', 'out.ckpt', 'back.pth'))
        make_source(args.model, pth)
        size = os.path.getsize(pth)
        print(f'{args.model}: source {pth} {size / 2 ** 20:.1f} MiB; each row is a fresh process')
        print(f"{'direction':<18} {'run':<8} {'time s':>7} {'(no import)':>11} {'x floor':>8} "
              f"{'process s':>9} {'peak RSS MiB':>12} {'x ckpt':>7} {'x floor':>8}")
        for direction, src, dst in (('torch -> MindSpore', pth, ckpt), ('MindSpore -> torch', ckpt, back)):
            floor = best(args.repeat, FLOOR, src, os.path.join(d, 'copy'))
            conv = best(args.repeat, CONVERT, src, dst, 0)
            checked = run(CONVERT, src, dst, 1)
            size = os.path.getsize(src)
            for label, r in (('floor', floor), ('convert', conv), ('+verify', checked)):
                t, no_import = r['seconds'], r['seconds'] - r['import_seconds']
                print(f"{direction:<18} {label:<8} {t:>7.2f} {no_import:>11.2f} {t / floor['seconds']:>7.2f}x "
                      f"{r['process_seconds']:>9.2f} {r['rss'] / 2 ** 20:>12.0f} {r['rss'] / size:>6.2f}x "
                      f"{r['rss'] / floor['rss']:>7.2f}x")
            print(f"{'':<18} conversion alone (no import): {(conv['seconds'] - conv['import_seconds']) / floor['seconds']:.2f}x "
                  f"the floor's time (goal <= 1.5x); peak RSS {conv['rss'] / size:.2f}x the checkpoint (goal <= 2.5x); "
                  f"verification {checked['verify_seconds']:.1f} s, passed: {checked['passed']}")


if __name__ == '__main__':
    main()
