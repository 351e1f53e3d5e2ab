"""Resident memory of one MindSpore GRAPH-mode step, phase by phase, in this process.

``python -m bench.memory --task train --batch 8`` builds TNT-S and ``bench.steps``'s step (the
same ``TrainStep`` as ``python -m bench``), compiles it, runs it ``--steps`` times and prints
one JSON line: RSS (MiB) after importing MindSpore, building the model, building the step,
compiling, the first step and the last, the peak RSS (``VmHWM``), and the compile's wall and
process CPU seconds. ``--task grad`` is forward and backward of the loss without the
optimizer (``value_and_grad`` over the trainable parameters), ``--task infer`` the
inference step. Run one configuration per process: the peak is the process's.
"""
import json
import time

from tnt_common.cli import parser


def rss():
    """(current, peak) resident set size of this process in MiB."""
    with open('/proc/self/status') as f:
        fields = dict(line.split(':', 1) for line in f if line.startswith(('VmRSS', 'VmHWM')))
    return tuple(int(fields[k].split()[0]) // 1024 for k in ('VmRSS', 'VmHWM'))


def grad_step(net, images, targets):
    """Loss and gradients of ``net`` (no optimizer), as one cell."""
    import mindspore as ms
    from mindspore import nn
    from tnt_train.train_step import NetWithLoss

    class Grad(nn.Cell):
        def __init__(self):
            super().__init__()
            self.loss = NetWithLoss(net)
            self.grad_fn = ms.value_and_grad(self.loss, None, ms.ParameterTuple(net.trainable_params()))

        def construct(self, images, targets):
            return self.grad_fn(images, targets)

    return Grad(), (images, targets)


def main(argv=None):
    ap = parser('python -m bench.memory', __doc__)
    ap.add_argument('--model', default='tnt_s_patch16_224')
    ap.add_argument('--task', choices=('train', 'grad', 'infer'), default='train')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--drop-path', type=float, default=None, help="default: the recipe's for train and grad")
    ap.add_argument('--steps', type=int, default=3)
    args = ap.parse_args(argv)
    out = {'start': rss()[0]}
    import mindspore as ms
    import mindspore_tnt
    from bench.steps import inputs, mindspore_step
    from tnt_common.recipe import RECIPE
    out['import'] = rss()[0]
    spec = dict(framework='mindspore', mode='graph', task='infer' if args.task == 'infer' else 'train',
                model=args.model, batch=args.batch, model_kwargs={})
    drop_path = RECIPE['drop_path'] if args.drop_path is None and args.task != 'infer' else (args.drop_path or 0.)
    if args.task == 'grad':
        from mindspore_tnt.context import select
        select('graph', 'CPU')
        net = mindspore_tnt.create_model(args.model, drop_path_rate=drop_path)
        net.set_train(True)
        out['model'] = rss()[0]
        cell, step_args = grad_step(net, *(ms.Tensor(a) for a in inputs(spec)))
        compile_step = lambda: cell.compile(*step_args)  # noqa: E731
        run = lambda: cell(*step_args)[0].asnumpy()  # noqa: E731
    else:
        compile_step, run = mindspore_step(spec, {'drop_path_rate': drop_path} if args.task == 'train' else {})
    out['step_built'] = rss()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    compile_step()
    out['compile_wall_s'] = round(time.perf_counter() - wall, 1)
    out['compile_cpu_s'] = round(time.process_time() - cpu, 1)
    out['compiled'] = rss()[0]
    for i in range(args.steps):
        run()
        if i == 0:
            out['first_step'] = rss()[0]
    out['last_step'], out['peak'] = rss()
    print(json.dumps(dict(model=args.model, task=args.task, batch=args.batch, drop_path=drop_path,
                          rss_mib=out)))


if __name__ == '__main__':
    main()
