"""One benchmark configuration in its own process, driven over stdin/stdout by ``bench.run``.

``python -m bench.worker SPEC_JSON QUIET_WAIT_S`` replies ``ready`` once set up, then answers
``step``, ``profile`` and ``quit`` (docs/performance.md, "What is measured, and how"). Replies
are lines prefixed with PREFIX; anything else on stdout is framework noise. Nothing is imported
before a conversion measurement (task ``convert``) that it does not need.
"""
import json
import os
import sys
import time

PREFIX = '@bench '
QUIET_SHARE = 0.15   # other processes use less than this share of all cores: quiet
NUM_CLASSES = 1000


def reply(**payload):
    print(PREFIX + json.dumps(payload), flush=True)


def peak_rss_mib():
    """The process's peak RSS: ``VmHWM`` (where /proc is missing ``ru_maxrss``, which may count the parent's)."""
    try:
        with open('/proc/self/status') as f:
            return next(int(ln.split()[1]) / 1024 for ln in f if ln.startswith('VmHWM:'))
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(fn):
    """(wall seconds of ``fn()``, share (0..1) of all cores' time other processes used meanwhile, or None
    where /proc/stat is missing)."""
    def machine_cpu_s():   # (busy, total) seconds of all cores since boot; guest time is in user
        with open('/proc/stat') as f:
            v = [int(x) / os.sysconf('SC_CLK_TCK') for x in f.readline().split()[1:9]]
        return sum(v) - v[3] - v[4], sum(v)
    try:
        machine = machine_cpu_s()
    except OSError:
        machine = None
    own, start = time.process_time(), time.perf_counter()
    fn()
    seconds, own = time.perf_counter() - start, time.process_time() - own
    if machine is None:
        return seconds, None
    busy, total = (b - a for a, b in zip(machine, machine_cpu_s()))
    return seconds, max(0., (busy - own) / total) if total > 0 else 0.


def conversion(kind, src, dst):
    """One conversion measurement: ``source`` writes a timm-layout checkpoint of model SRC to DST;
    ``floor`` reads SRC and writes its bytes; ``convert`` and ``verify`` run ``convert.convert_file``."""
    start, out = time.perf_counter(), {'import_s': 0.}
    if kind == 'source':
        import torch
        import torch_ref
        from tnt_common.fixtures import random_timm_weights
        shapes = {k: tuple(v.shape) for k, v in torch_ref.create_model(src).state_dict().items()}
        torch.save({k: torch.from_numpy(v) for k, v in random_timm_weights(shapes).items()}, dst)
    elif kind == 'floor':
        with open(src, 'rb') as f, open(dst, 'wb') as g:
            g.write(f.read())
    else:
        if src.endswith('.pth') or dst.endswith('.pth'):
            import torch  # noqa: F401
        out['import_s'] = time.perf_counter() - start
        from convert import convert_file
        verification = convert_file(src, dst, verify=kind == 'verify', force=True).get('verification', {})
        out.update(verify_s=verification.get('seconds'), passed=verification.get('passed'))
    return dict(out, seconds=time.perf_counter() - start)


def mindspore_step(spec, kwargs, recipe, images, targets):
    """(compile or None, run) of the spec's step: ``net(images)``, or ``tnt_train``'s ``TrainStep``."""
    import mindspore as ms
    import mindspore_tnt
    from mindspore_tnt.context import select
    select(spec['mode'], 'CPU')
    net = mindspore_tnt.create_model(spec['model'], **kwargs)
    args = (ms.Tensor(images),) if spec['task'] == 'infer' else (ms.Tensor(images), ms.Tensor(targets))
    net.set_train(spec['task'] == 'train')
    cell, pick = net, lambda out: out
    if spec['task'] == 'train':
        from tnt_train.optim import create_optimizer
        from tnt_train.train_step import TrainStep
        optimizer, lr_schedule = create_optimizer(net, [recipe['lr']])
        cell, pick = TrainStep(net, optimizer, lr_schedule, clip_grad=recipe['clip_grad']), lambda out: out[0]
    return ((lambda: cell.compile(*args)) if spec['mode'] == 'graph' else None), lambda: pick(cell(*args)).asnumpy()


def torch_step(spec, kwargs, recipe, images, targets):
    """(None, run) of the spec's step: ``model(images)``, or the recipe's step with ``torch.optim.AdamW``."""
    import torch
    import torch_ref
    from parity.train_step import torch_optimizer
    model = torch_ref.create_model(spec['model'], **kwargs)
    images, targets = torch.from_numpy(images), torch.from_numpy(targets)
    if spec['task'] == 'infer':
        model.eval()
        return None, torch.no_grad()(lambda: model(images).numpy())
    model.train()
    optimizer = torch_optimizer(model, recipe['lr'])

    def train():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe['clip_grad'])
        optimizer.step()
        return loss.item()
    return None, train


def main():
    spec, quiet_wait_s = json.loads(sys.argv[1]), float(sys.argv[2])
    if spec['task'] == 'convert':
        return reply(ready=True, **conversion(spec['kind'], spec['src'], spec['dst']), peak_rss_mib=peak_rss_mib())
    framework = __import__(spec['framework'])  # before the baseline: counts as import cost
    facts = {'torch_threads': framework.get_num_threads()} if spec['framework'] == 'torch' else {}
    from parity.train_step import batches
    from tnt_common.recipe import RECIPE
    from tnt_common.variants import model_args
    rss_import = peak_rss_mib()
    kwargs = dict({'drop_path_rate': RECIPE['drop_path']} if spec['task'] == 'train' else {}, **spec['model_kwargs'])
    data = batches(1, spec['batch'], model_args(spec['model'])['img_size'], NUM_CLASSES)[0]
    compile_graph, step = (mindspore_step if spec['framework'] == 'mindspore' else torch_step)(
        spec, kwargs, RECIPE, *data)
    compile_s = timed(compile_graph)[0] if compile_graph is not None else None
    first = timed(step)[0]
    for _ in range(spec['warmup']):
        step()
    reply(ready=True, compile_s=compile_s, first_call_s=first, rss_import_mib=rss_import, **facts)
    for line in sys.stdin:  # 'step' or 'profile' lines, then 'quit'
        if line.strip() == 'step':
            deadline = time.monotonic() + quiet_wait_s
            while time.monotonic() < deadline and (timed(lambda: time.sleep(0.5))[1] or 0.) >= QUIET_SHARE:
                pass
            reply(**dict(zip(('seconds', 'others_cpu'), timed(step))))
        elif line.strip() == 'profile':
            from bench.profile import operator_times
            reply(ops=operator_times(spec['framework'], step))
        else:
            break
    reply(peak_rss_mib=peak_rss_mib())


if __name__ == '__main__':
    main()
