"""Top-1/top-5 accuracy and loss over a validation set, summed over ranks under msrun."""
import numpy as np

import mindspore as ms
from mindspore import nn, ops


class EvalStep(nn.Cell):
    """``[loss sum, top-1 hits, top-k hits, count]`` of one batch; labels < 0 mark padding."""

    def __init__(self, net, topk=5):
        super().__init__(auto_prefix=False)
        self.net = net
        self.topk = topk

    def construct(self, images, labels):
        logits = self.net(images).astype(ms.float32)
        valid = (labels >= 0).astype(ms.float32)
        safe = ops.maximum(labels, 0)
        loss = ops.cross_entropy(logits, safe, reduction='none')
        hits = (ops.topk(logits, self.topk)[1] == safe.reshape(-1, 1)).astype(ms.float32)
        return ops.stack([(loss * valid).sum(), (hits[:, 0] * valid).sum(),
                          (hits.max(axis=1) * valid).sum(), valid.sum()])


class AllReduceSum(nn.Cell):
    def __init__(self):
        super().__init__()
        self.all_reduce = ops.AllReduce()

    def construct(self, x):
        return self.all_reduce(x)


class Evaluator:
    """Evaluates ``net`` on a batched ``(image, label)`` dataset; one compiled graph (last batch padded)."""

    def __init__(self, net, num_classes, batch_size, world=1):
        self.step = EvalStep(net, min(5, num_classes))
        self.batch_size = batch_size
        self.reduce = AllReduceSum() if world > 1 else None

    def __call__(self, dataset):
        self.step.set_train(False)
        total = np.zeros(4, np.float64)
        for images, labels in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1):
            n = len(labels)
            if n < self.batch_size:
                images = np.concatenate([images, np.zeros((self.batch_size - n,) + images.shape[1:], images.dtype)])
                labels = np.concatenate([labels, np.full(self.batch_size - n, -1, labels.dtype)])
            total += self.step(ms.Tensor(images), ms.Tensor(labels)).asnumpy()
        if self.reduce is not None:
            total = self.reduce(ms.Tensor(total.astype(np.float32))).asnumpy().astype(np.float64)
        loss, top1, top5, count = total
        count = max(count, 1.)
        return dict(loss=loss / count, top1=100. * top1 / count, top5=100. * top5 / count, count=int(count))
