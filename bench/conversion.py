"""Checkpoint conversion: time and peak memory of ``convert.convert_file`` next to the floor.

The floor is what any converter must do: read the source file and write as many bytes
(one ``f.read()``, one ``write``). Each measurement is a fresh process that reports its
time, the part of it spent on ``import torch`` (needed to read or write torch files) and
its peak RSS (``VmHWM``, which unlike ``ru_maxrss`` does not inherit the parent's).
``floor`` and ``convert`` (``verify=False``) keep the fastest of ``repeats`` runs;
``verify`` (the conversion with verification: both models built, a batch through each)
runs once. Both directions: torch ``.pth`` (timm layout) -> MindSpore ``.ckpt``, and back.
"""
import json
import os
import subprocess
import sys
import time

from bench.worker import PREFIX

DIRECTIONS = ('torch -> MindSpore', 'MindSpore -> torch')


def child(kind, src, dst):
    """``python -m bench.conversion KIND SRC DST``: one measurement (``source``: SRC is a model)."""
    start, out = time.perf_counter(), {'import_s': 0.}
    if kind == 'source':
        import torch
        import torch_ref
        from tnt_common.fixtures import random_timm_weights
        shapes = {k: tuple(v.shape) for k, v in torch_ref.create_model(src).state_dict().items()}
        torch.save({k: torch.from_numpy(v) for k, v in random_timm_weights(shapes).items()}, dst)
    elif kind == 'floor':
        with open(src, 'rb') as f:
            data = f.read()
        with open(dst, 'wb') as f:
            f.write(data)
    else:
        if src.endswith('.pth') or dst.endswith('.pth'):
            import torch  # noqa: F401
        out['import_s'] = time.perf_counter() - start
        from convert import convert_file
        verification = convert_file(src, dst, verify=kind == 'verify', force=True).get('verification', {})
        out.update(verify_s=verification.get('seconds'), passed=verification.get('passed'))
    out['seconds'] = time.perf_counter() - start
    with open('/proc/self/status') as f:
        out['peak_rss_mib'] = next(int(ln.split()[1]) / 1024 for ln in f if ln.startswith('VmHWM:'))
    print(PREFIX + json.dumps(out), flush=True)


def measure(kind, src, dst, root):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, '-m', 'bench.conversion', kind, src, dst], capture_output=True,
                          text=True, cwd=os.path.dirname(dst), env=dict(os.environ, PYTHONPATH=root, GLOG_v='3'))
    replies = [ln for ln in done.stdout.splitlines() if ln.startswith(PREFIX)]
    if done.returncode or not replies:
        errors = [ln for ln in done.stderr.splitlines() if 'Error' in ln] or [f'exit code {done.returncode}']
        raise RuntimeError(f'{kind} {os.path.basename(src)}: {errors[-1].strip()}')
    return dict(json.loads(replies[-1][len(PREFIX):]), process_s=time.perf_counter() - start)


def run_conversion(model, repeats, workdir, root, echo):
    """Rows of one model: per direction, the floor, the conversion and the verified conversion."""
    pth, ckpt, back, copy = (os.path.join(workdir, n) for n in ('src.pth', 'out.ckpt', 'back.pth', 'copy'))
    measure('source', model, pth, root)
    rows = []
    for direction, src, dst in zip(DIRECTIONS, (pth, ckpt), (ckpt, back)):
        best = {kind: min((measure(kind, src, d, root) for _ in range(repeats)), key=lambda r: r['seconds'])
                for kind, d in (('floor', copy), ('convert', dst))}
        rows.append(dict(model=model, direction=direction, source_mib=os.path.getsize(src) / 2 ** 20,
                         **best, verify=measure('verify', src, dst, root)))
        echo(f"  {direction}: {best['convert']['seconds'] - best['convert']['import_s']:.2f} s "
             f"(floor {best['floor']['seconds']:.2f} s), peak RSS {best['convert']['peak_rss_mib']:.0f} MiB")
    return rows


if __name__ == '__main__':
    child(*sys.argv[1:])
