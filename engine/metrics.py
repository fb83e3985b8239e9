"""Streaming metrics: aggregated over all updates, not a mean of batch means.

Scores ``y_pred`` are the model's logits unless ``from_logits=False``. ``update`` takes
host arrays. Metrics that a backend op computes (:meth:`Metric.device_kind`) are kept
on the device by the trainer instead, with ``metric_sums`` of :mod:`kernels.spec`, and
:meth:`Metric.absorb` takes the sums it read back; a subclass that overrides ``update``
keeps the host path.
"""
from __future__ import annotations

import numpy as np

from kernels import spec


class Metric:
    name = ""

    def __init__(self):
        self.reset()

    def reset(self):
        self._total = 0.0
        self._count = 0.0

    def compute(self):
        """The aggregate so far (NaN before any update)."""
        return self._total / self._count if self._count else float("nan")

    def _add(self, total, count):
        self._total += float(total)
        self._count += float(count)

    def device_kind(self, targets):
        """``(kind, threshold)`` for the backend's ``metric_sums`` on checked ``targets``
        (class indices (N,) or rows (N, K)), or None when only ``update`` on host arrays
        computes this metric. The kind belongs to the class whose ``update`` is in effect."""
        owner = next((c for c in type(self).__mro__ if "update" in vars(c)), Metric)
        device = vars(owner).get("_device")
        return None if device is None else device(self, targets)

    def absorb(self, total, count):
        """Add sums that ``metric_sums`` accumulated on the device."""
        self._add(total, count)


class Mean(Metric):
    """The (optionally weighted) mean of every value passed to ``update``."""

    name = "mean"

    def update(self, values, weight=None):
        values = np.asarray(values, dtype=np.float64)
        if weight is None:
            self._add(values.sum(), values.size)
        else:
            weight = np.broadcast_to(np.asarray(weight, dtype=np.float64), values.shape)
            self._add((values * weight).sum(), weight.sum())


def _class_labels(y):
    y = np.asarray(y)
    return y.argmax(axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(len(y))


class Accuracy(Metric):
    """The fraction of rows whose predicted class is the target's.

    Several outputs: the argmax; one output: ``score > threshold`` (0 on logits, 0.5 on
    probabilities). Targets are class indices, one-hot rows or 0/1 labels.
    """

    name = "accuracy"

    def __init__(self, from_logits=True):
        self.threshold = 0.0 if from_logits else 0.5
        super().__init__()

    def update(self, y_true, y_pred):
        y_pred = np.asarray(y_pred)
        if y_pred.ndim == 2 and y_pred.shape[1] > 1:
            predicted = y_pred.argmax(axis=1)
            target = _class_labels(y_true)
        else:
            predicted = y_pred.reshape(len(y_pred)) > self.threshold
            target = np.asarray(y_true).reshape(len(y_pred)) > 0.5
        self._add(np.count_nonzero(predicted == target), len(predicted))

    def _device(self, targets):
        return spec.METRIC_ACCURACY, self.threshold


class MSE(Metric):
    """Mean squared error over all elements."""

    name = "mse"

    def update(self, y_true, y_pred):
        y_pred = np.asarray(y_pred, dtype=np.float64)
        d = y_pred - np.asarray(y_true, dtype=np.float64).reshape(y_pred.shape)
        self._add(np.dot(d.ravel(), d.ravel()), d.size)

    def _device(self, targets):
        return (spec.METRIC_SQUARED_ERROR, 0.0) if targets.ndim == 2 else None


class MAE(Metric):
    """Mean absolute error over all elements."""

    name = "mae"

    def update(self, y_true, y_pred):
        y_pred = np.asarray(y_pred, dtype=np.float64)
        self._add(np.abs(y_pred - np.asarray(y_true, dtype=np.float64).reshape(y_pred.shape)).sum(), y_pred.size)

    def _device(self, targets):
        return (spec.METRIC_ABSOLUTE_ERROR, 0.0) if targets.ndim == 2 else None


class CrossEntropy(Metric):
    """Mean softmax cross-entropy of class-index or distribution targets (sigmoid BCE for one output)."""

    name = "cross_entropy"

    def __init__(self, from_logits=True):
        self.from_logits = from_logits
        super().__init__()

    def update(self, y_true, y_pred):
        scores = np.asarray(y_pred, dtype=np.float64)
        y = np.asarray(y_true)
        if scores.ndim == 1 or scores.shape[1] == 1:
            z = scores.reshape(len(scores))
            t = y.reshape(len(scores)).astype(np.float64)
            if self.from_logits:
                losses = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
            else:
                p = np.clip(z, 1e-12, 1 - 1e-12)
                losses = -(t * np.log(p) + (1 - t) * np.log1p(-p))
        else:
            if self.from_logits:
                shifted = scores - scores.max(axis=1, keepdims=True)
                log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            else:
                log_p = np.log(np.clip(scores, 1e-12, None))
            if y.ndim == 2:
                losses = -(y * log_p).sum(axis=1)
            else:
                losses = -log_p[np.arange(len(y)), y.astype(np.int64)]
        self._add(losses.sum(), len(losses))

    def _device(self, targets):
        return (spec.METRIC_CROSS_ENTROPY, 0.0) if self.from_logits else None


_CLASSES = {"accuracy": Accuracy, "acc": Accuracy, "mse": MSE, "mae": MAE, "cross_entropy": CrossEntropy}
NAMES = tuple(_CLASSES)


def get(metric, argument="metrics"):
    """A fresh Metric from a name, or the Metric object itself."""
    if isinstance(metric, Metric):
        return metric
    if not isinstance(metric, str):
        raise TypeError(f"{argument} entries must be metric names or engine.metrics.Metric objects; got {type(metric).__name__}")
    if metric not in _CLASSES:
        raise ValueError(f"{argument} entries must be one of {', '.join(NAMES)}; got {metric!r}")
    return _CLASSES[metric]()
