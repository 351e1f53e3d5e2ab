"""The training session: builds model, optimiser, compiled steps and records, then trains and evaluates."""
import math
import os
import time

import numpy as np

from tnt_common.files import atomic_output, remove_temporaries
from tnt_common.recipe import lr_schedule
from tnt_common.variants import pretrained_cfg
from tnt_train import checkpoint as ckpt
from tnt_train.data import TrainTransform, eval_dataset, samples_per_rank, train_dataset
from tnt_train.errors import InputError
from tnt_train.metrics import RunLog

OUTPUTS = ('model.ckpt', 'model_ema.ckpt', 'tnt.mindir', 'args.yaml')   # what a run writes beside its records


class Trainer:
    """One run: ``fit()`` trains with evaluation each epoch; ``evaluate()`` and ``export()`` stand alone."""

    def __init__(self, args, runtime, classes):
        from mindspore_tnt.amp import apply_amp
        from tnt_train.droppath import DropPathNoise
        from tnt_train.batchnorm import distributor
        from tnt_train.ema import EMA
        from tnt_train.evaluate import Evaluator
        from tnt_train.model import build_model
        from tnt_train.optim import create_optimizer
        from tnt_train.train_step import TrainStep, dynamic_loss_scaler

        self.args, self.rt, self.classes = args, runtime, classes
        self.num_classes = len(classes)
        cfg = pretrained_cfg(args.model)
        self.crop_pct = cfg['crop_pct'] if args.crop_pct is None else args.crop_pct
        self.mean, self.std = cfg['mean'], cfg['std']
        self.net = build_model(args.model, self.num_classes, args.img_size, args.drop_path, args.initial_checkpoint,
                               replace_head=args.num_classes is not None, numerics=args.numerics)
        self.train_net = apply_amp(self.net, args.amp)

        self.steps_per_epoch = 0 if args.eval_only else \
            samples_per_rank(args.data, 'train', classes, runtime.rank, runtime.world, args.aug_repeats) \
            // args.batch_size
        if self.steps_per_epoch == 0 and not args.eval_only:
            raise InputError(f'--batch-size {args.batch_size} is larger than the {args.data}/train '
                             f'images one rank reads per epoch')
        self.global_batch = args.batch_size * runtime.world
        self.peak_lr = args.lr          # absolute: train_ascend.peak_lr resolves --lr-base
        total = max(args.epochs * self.steps_per_epoch, 1)
        self.schedule = lr_schedule(self.peak_lr, total, round(args.warmup_epochs * self.steps_per_epoch),
                                    args.warmup_lr, args.min_lr)
        self.optimizer, self.lr_schedule = create_optimizer(self.net, self.schedule, args.weight_decay, args.opt_eps)
        self.scaler = dynamic_loss_scaler(args.loss_scale, args.loss_scale_window) \
            if args.loss_scale and not args.eval_only else None
        self.ema = EMA(self.net, args.model_ema_decay) if args.model_ema else None
        self.dist_bn = None if args.eval_only else distributor(self.net, self.ema, runtime.world, args.dist_bn)
        self.noise = DropPathNoise(self.net, args.batch_size) if args.drop_path > 0 and not args.eval_only else None
        self.step = TrainStep(self.train_net, self.optimizer, self.lr_schedule, args.clip_grad, self.scaler,
                              self.ema, runtime.world, self.noise)
        self.evaluator = Evaluator(self.train_net, self.num_classes, args.validation_batch_size, runtime.world)
        extra = [self.scaler.scale_value, self.scaler.counter] if self.scaler else []
        fed = {p.name for p in self.noise.get_parameters()} if self.noise else set()   # refilled every step
        self.state = [p for p in ckpt.state_parameters(self.step, *extra) if p.name not in fed]
        self.checkpoints = ckpt.CheckpointManager(args.output, args.checkpoint_hist,
                                                  enabled=runtime.is_main and not args.eval_only)
        self.log = RunLog(args.output, enabled=runtime.is_main)
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.best_top1 = self.resumed_at = None
        self.num_params = sum(int(np.prod(p.shape)) for p in self.net.trainable_params())

    # -- state -------------------------------------------------------------------------------
    def meta(self):
        return dict(epoch=self.epoch, step_in_epoch=self.step_in_epoch, global_step=self.global_step,
                    steps_per_epoch=self.steps_per_epoch, seed=self.args.seed, workers=self.args.workers,
                    best_top1=self.best_top1,
                    model=self.args.model, num_classes=self.num_classes, img_size=self.args.img_size,
                    numerics=self.net.numerics.to_json())

    def resume(self, path, saved_state=None):
        """Restore the full training state saved at ``path`` (or already read from it): the
        next step is the one after it, with the checkpoint's data seed."""
        saved, meta, rng_state = saved_state or ckpt.read(path)
        import mindspore as ms
        from tnt_train.train_step import LOSS_SCALE_NAMES
        if not self.args.eval_only and meta.get('steps_per_epoch') != self.steps_per_epoch:
            raise InputError(f'checkpoint {path} was written with {meta.get("steps_per_epoch")} steps per epoch, '
                             f'this run has {self.steps_per_epoch}: use the same data, batch size and ranks')
        has_ema = any(k.startswith('ema.') for k in saved)
        if has_ema != (self.ema is not None):
            raise InputError(f'checkpoint {path} was written ' + (
                'with an EMA of the weights: resume with --model-ema' if has_ema else
                'without an EMA of the weights: resume without --model-ema'))
        scaled = any(k in saved for k in LOSS_SCALE_NAMES)
        if self.args.eval_only:    # evaluation takes no loss scale, whatever the run trained with
            saved = {k: v for k, v in saved.items() if k not in LOSS_SCALE_NAMES}
        elif scaled != (self.scaler is not None):
            raise InputError(f'checkpoint {path} was written ' + (
                'with a dynamic loss scale: resume with the --amp and --loss-scale the run had' if scaled else
                'without a loss scale: resume with --loss-scale 0, or the --amp the run had'))
        ckpt.restore(self.state, saved, path)
        ms.set_rng_state(rng_state)
        self.resumed_at = meta['global_step']
        self.epoch, self.step_in_epoch = meta['epoch'], meta['step_in_epoch']
        self.global_step, self.best_top1 = meta['global_step'], meta['best_top1']
        self.args.seed = meta['seed']
        if meta.get('workers', self.args.workers) != self.args.workers:
            self.log.log(f"resume: --workers {meta['workers']} as in the checkpoint (MindSpore's random "
                         f"transforms draw per worker, so the data replays exactly only with the same count)")
            self.args.workers = meta['workers']
        return meta

    def save(self):
        if self.dist_bn is not None:   # mid-epoch too: a resume from it continues as the run did
            self.dist_bn()
        return self.checkpoints.save(self.state, self.meta())

    # -- evaluation --------------------------------------------------------------------------
    def _val_data(self):
        a = self.args
        return eval_dataset(a.data, self.classes, a.img_size, self.crop_pct, a.validation_batch_size, self.mean,
                            self.std, self.rt.rank, self.rt.world, a.workers, a.prefetch)

    def evaluate(self):
        """``{top1, top5, loss, count}`` of the model, plus ``ema_top1``/``ema_top5`` with EMA."""
        result = self.evaluator(self._val_data())
        if self.ema is not None:
            with self.ema.applied(self.net):
                ema = self.evaluator(self._val_data())
            result.update(ema_top1=ema['top1'], ema_top5=ema['top5'])
        return result

    # -- training ----------------------------------------------------------------------------
    def _train_data(self, epoch):
        a = self.args
        tf = TrainTransform(img_size=a.img_size, augment=not a.no_aug, crop_pct=self.crop_pct, scale=a.scale,
                            hflip=a.hflip, rand_augment=a.aa, reprob=a.reprob, mixup=a.mixup, cutmix=a.cutmix,
                            mixup_switch_prob=a.mixup_switch_prob, smoothing=a.smoothing, mean=self.mean,
                            std=self.std)
        return train_dataset(a.data, self.classes, tf, a.batch_size, a.seed, epoch, self.rt.rank, self.rt.world,
                             a.workers, a.prefetch, a.aug_repeats)

    def _train_epoch(self):
        from tqdm import tqdm
        a, S = self.args, self.steps_per_epoch
        start = self.step_in_epoch
        self.step.set_train(True)       # drop path on (evaluation switches the shared model to eval mode)
        bar = tqdm(total=S, initial=start, desc=f'epoch {self.epoch + 1}/{a.epochs}', unit='step',
                   disable=None if self.rt.is_main else True, leave=False)
        # a resumed epoch's mean loss and skipped steps include the steps logged before the interruption
        logged = [r for r in self.log.steps if int(r['epoch']) == self.epoch]
        losses = [float(r['loss']) for r in logged if not int(r['overflow'])]
        times, overflows, row = [], sum(int(r['overflow']) for r in logged), {}
        iterator = self._train_data(self.epoch).create_tuple_iterator(num_epochs=1)
        for i, (images, targets) in enumerate(iterator):
            if i >= S:
                break
            if i < start:       # resumed mid-epoch: replay the seeded pipeline up to where it stopped
                continue
            t0 = time.perf_counter()
            noise = () if self.noise is None else (self.noise.host_noise(a.seed, self.global_step, self.rt.rank),)
            loss, grad_norm, finite, scale, lr = self.step(images, targets, *noise)
            loss, finite = float(loss.asnumpy()), bool(finite.asnumpy())
            dt = time.perf_counter() - t0
            if self.noise is not None and i == start:
                self.noise.check_consumed()     # every DropPath call took its noise: drop path is on
            if self._warm:
                times.append(dt)
            self._warm = True
            self.global_step += 1
            self.step_in_epoch = i + 1
            row = dict(global_step=self.global_step, epoch=self.epoch, loss=f'{loss:.6f}',
                       lr=f'{float(lr.asnumpy()):.6e}', grad_norm=f'{float(grad_norm.asnumpy()):.4f}',
                       loss_scale=f'{float(scale.asnumpy()):.10g}', overflow=int(not finite), step_ms=f'{dt * 1e3:.1f}')
            self.log.step(row)
            bar.update(1)
            bar.set_postfix(loss=f'{loss:.4f}', lr=row['lr'])
            if finite:
                losses.append(loss)
            else:
                overflows += 1
                self.log.log(f"step {self.global_step}: non-finite gradients at loss scale {row['loss_scale']}, "
                             f"update skipped")
            if a.log_interval and self.global_step % a.log_interval == 0 and bar.disable:
                self.log.log(f"epoch {self.epoch + 1} step {i + 1}/{S} loss {loss:.4f} lr {row['lr']} "
                             f"grad_norm {row['grad_norm']} {dt * 1e3:.0f} ms")
            if a.save_every and self.global_step % a.save_every == 0 and i + 1 < S:
                self.save()
        bar.close()
        step_s = float(np.mean(times)) if times else float('nan')
        return dict(train_loss=float(np.mean(losses)) if losses else float('nan'), lr=row.get('lr', ''),
                    step_ms=step_s * 1e3, img_per_s=self.global_batch / step_s if times else float('nan'),
                    overflow_steps=overflows, loss_scale=row.get('loss_scale', ''))

    def _summary(self, train, result, seconds):
        line = f"epoch {self.epoch}/{self.args.epochs}: train loss {train['train_loss']:.4f}"
        if result:
            line += f", val top-1 {result['top1']:.2f} top-5 {result['top5']:.2f}"
            if 'ema_top1' in result:
                line += f" (EMA {result['ema_top1']:.2f} / {result['ema_top5']:.2f})"
        return line + (f", {train['img_per_s']:.1f} img/s, {train['step_ms']:.1f} ms/step, "
                       f"{train['overflow_steps']} skipped steps, {seconds:.1f} s")

    def run_info(self):
        a, rt = self.args, self.rt
        return dict(model=a.model, device=rt.device, ranks=rt.world, mode='pynative' if a.pynative else 'graph',
                    amp=a.amp, img_size=a.img_size, num_classes=self.num_classes, params=self.num_params,
                    batch_per_rank=a.batch_size, global_batch=self.global_batch, peak_lr=self.peak_lr,
                    epochs=a.epochs, steps_per_epoch=self.steps_per_epoch, data=a.data, seed=a.seed,
                    preset=a.preset)

    def fit(self):
        a = self.args
        info = self.run_info()
        # a run resumed into another folder takes its records up to the checkpoint from the run's
        self.log.start(self.global_step, info, ckpt.run_folder(a.resume) if a.resume else None)
        self.log.log(f"{a.model} ({self.num_params:,} params) on {self.rt.device} x{self.rt.world}, "
                     f"{'PyNative' if a.pynative else 'GRAPH'} mode, AMP {a.amp}; global batch {self.global_batch}, "
                     f"peak LR {self.peak_lr:.3g}, {a.epochs} epochs x {self.steps_per_epoch} steps"
                     + (f'; resumed at epoch {self.epoch + 1} step {self.step_in_epoch}' if self.global_step else ''))
        # the records now end at the checkpoint resumed from: so do the checkpoints
        for later in self.checkpoints.start(self.resumed_at):
            self.log.log(f'resume: removed {later}, written after the checkpoint resumed from')
        if self.rt.is_main:
            remove_temporaries(a.output, OUTPUTS)
        self._warm = False
        while self.epoch < a.epochs:
            t0 = time.perf_counter()
            train = self._train_epoch()
            if self.dist_bn is not None:     # every rank evaluates, and rank 0 saves, the same statistics
                self.dist_bn()
            result = self.evaluate() if (self.epoch + 1) % a.eval_every == 0 or self.epoch + 1 == a.epochs else {}
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
            improved = 'top1' in result and (self.best_top1 is None or result['top1'] > self.best_top1)
            if improved:
                self.best_top1 = result['top1']
            seconds = time.perf_counter() - t0
            self.log.epoch(dict(
                epoch=self.epoch, global_step=self.global_step, epoch_s=_fmt(seconds),
                val_loss=_fmt(result.get('loss')),
                **{k: _fmt(result.get(k)) for k in ('top1', 'top5', 'ema_top1', 'ema_top5')},
                **{k: _fmt(v) for k, v in train.items()}))
            self.log.log(self._summary(train, result, seconds))
            if improved:   # first: the step checkpoint's best_top1 is best.ckpt's
                self.checkpoints.save_best(self.state, self.meta())
            self.save()
        from tnt_train.ema import averaged
        weights = {p.name: p.asnumpy() for p in averaged(self.net)}    # BatchNorm statistics too
        line = f'rank {self.rt.rank}: weights sha256 {ckpt.fingerprint(weights)}'
        if self.rt.is_main:
            self.log.log(line)      # printed and in train.log
        else:
            print(line, flush=True)
        if self.rt.is_main:
            ckpt.save_weights(self.net, os.path.join(a.output, OUTPUTS[0]))
            if self.ema is not None:
                with self.ema.applied(self.net):
                    ckpt.save_weights(self.net, os.path.join(a.output, OUTPUTS[1]))
        self.log.close()
        return self.best_top1

    def export(self):
        """MindIR of the trained weights in fp32, inference mode, batch 1: ``<output>/tnt.mindir``, computing the
        run's numerics in ``impl='standard'`` (no custom operator: it loads on CPU, GPU and Ascend, as tnt-export's)."""
        import mindspore as ms
        import mindspore_tnt
        from tnt_train.model import copy_weights, write_mindir
        if not self.rt.is_main:
            return None
        net = copy_weights(self.net, mindspore_tnt.create_model(self.args.model, num_classes=self.num_classes,
                                                               img_size=self.args.img_size, impl='standard',
                                                               **self.net.numerics.model_kwargs()))
        net.set_train(False)
        s = self.args.img_size
        path = os.path.join(self.args.output, OUTPUTS[2])
        with atomic_output(path) as tmp:   # ends in .mindir: ms.export appends nothing
            write_mindir(net, tmp, ms.Tensor(np.zeros((1, 3, s, s), np.float32)))
        return path


def _fmt(value):
    if value is None or value == '':
        return ''
    if isinstance(value, str):
        return value
    return f'{value:.4f}' if isinstance(value, float) and not math.isnan(value) else str(value)
