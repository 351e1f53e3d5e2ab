"""The run's records: per-step and per-epoch CSVs, a JSON summary, a text log and a PNG of the curves."""
import csv
import json
import os

from tnt_common.files import atomic_output, figure, remove_temporaries

STEP_FIELDS = ('global_step', 'epoch', 'loss', 'lr', 'grad_norm', 'loss_scale', 'overflow', 'step_ms')
EPOCH_FIELDS = ('epoch', 'global_step', 'train_loss', 'lr', 'val_loss', 'top1', 'top5', 'ema_top1', 'ema_top5',
                'img_per_s', 'step_ms', 'overflow_steps', 'loss_scale', 'epoch_s')


def _read_rows(path):
    """The rows of the CSV at ``path``; a last line without its line end (a write cut short) is left out."""
    if not os.path.exists(path):
        return []
    with open(path, newline='') as f:
        lines = f.readlines()
    if lines and not lines[-1].endswith('\n'):
        lines.pop()
    return list(csv.DictReader(lines))


def _write_rows(path, fields, rows):
    with atomic_output(path) as tmp, open(tmp, 'w', newline='') as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)


class RunLog:
    """Append-only records in ``out_dir`` (a no-op except on rank 0)."""

    def __init__(self, out_dir, enabled=True):
        self.enabled = enabled
        self.paths = {k: os.path.join(out_dir, f) for k, f in (
            ('steps', 'steps.csv'), ('epochs', 'metrics.csv'), ('json', 'metrics.json'),
            ('log', 'train.log'), ('plot', 'curves.png'))}
        self.steps, self.epochs = [], []
        self._step_file = None

    def start(self, global_step, info, records=None):
        """Keep the records up to ``global_step`` (a resumed run rewrites what follows), read
        from the run folder ``records`` (a resumed run's; default this one)."""
        if not self.enabled:
            return
        remove_temporaries(os.path.dirname(self.paths['steps']), [os.path.basename(p) for p in self.paths.values()])
        source = {k: os.path.join(records, os.path.basename(p)) for k, p in self.paths.items()} if records \
            else self.paths
        self.steps = [r for r in _read_rows(source['steps']) if int(r['global_step']) <= global_step]
        self.epochs = [r for r in _read_rows(source['epochs']) if int(r['global_step']) <= global_step]
        _write_rows(self.paths['steps'], STEP_FIELDS, self.steps)
        _write_rows(self.paths['epochs'], EPOCH_FIELDS, self.epochs)
        self._step_file = open(self.paths['steps'], 'a', newline='')
        self._step_writer = csv.DictWriter(self._step_file, STEP_FIELDS)
        self.info = info

    def log(self, line):
        if self.enabled:
            print(line, flush=True)
            with open(self.paths['log'], 'a') as f:
                f.write(line + '\n')

    def step(self, row):
        if self.enabled:
            self.steps.append(row)
            self._step_writer.writerow(row)
            self._step_file.flush()

    def epoch(self, row):
        if not self.enabled:
            return
        self.epochs.append(row)
        _write_rows(self.paths['epochs'], EPOCH_FIELDS, self.epochs)
        with atomic_output(self.paths['json']) as tmp, open(tmp, 'w') as f:
            json.dump({'run': self.info, 'epochs': self.epochs}, f, indent=1, default=str)
        self.plot()

    def plot(self):
        """Loss, accuracy and LR curves as a PNG (matplotlib, Agg canvas)."""
        num = lambda rows, k: [float(r[k]) for r in rows if r.get(k) not in ('', None)]  # noqa: E731
        fig = figure(figsize=(15, 4))
        ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
        ax_loss.plot(num(self.steps, 'global_step'), num(self.steps, 'loss'), lw=0.6, alpha=0.5, label='train (step)')
        ep = self.epochs
        ax_loss.plot(num(ep, 'global_step'), num(ep, 'train_loss'), 'o-', label='train (epoch mean)')
        ax_loss.plot([float(r['global_step']) for r in ep if r['val_loss']], num(ep, 'val_loss'), 's-', label='val')
        ax_loss.set(xlabel='step', ylabel='loss', title='loss')
        for key, style in (('top1', 'o-'), ('top5', 's--'), ('ema_top1', 'o:'), ('ema_top5', 's:')):
            ys = num(ep, key)
            if ys:
                ax_acc.plot([float(r['epoch']) for r in ep if r[key] not in ('', None)], ys, style, label=key)
        ax_acc.set(xlabel='epoch', ylabel='accuracy (%)', title='validation accuracy')
        ax_lr.plot(num(self.steps, 'global_step'), num(self.steps, 'lr'))
        ax_lr.set(xlabel='step', ylabel='learning rate', title='learning rate')
        for ax in (ax_loss, ax_acc):
            if ax.lines:
                ax.legend()
        for ax in (ax_loss, ax_acc, ax_lr):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_output(self.paths['plot']) as tmp:
            fig.savefig(tmp, dpi=90)

    def close(self):
        if self._step_file is not None:
            self._step_file.close()
            self._step_file = None
