"""Losses on logits: target checks here, the arithmetic in the backend's fused kernels."""
from __future__ import annotations

import numpy as np

from kernels import spec

from . import backend as backend_module
from .validation import as_float_array, as_numeric_array, check_finite, number, one_of

REDUCTIONS = {"none": spec.NONE, "mean": spec.MEAN, "sum": spec.SUM}


class Loss:
    """A loss on the model's logits with torch's ``reduction`` ("mean", "sum" or "none")."""

    name = ""

    def __init__(self, reduction="mean"):
        self.reduction = one_of(reduction, tuple(REDUCTIONS), "reduction")

    def config(self):
        return {"name": self.name, "reduction": self.reduction}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    # What subclasses define.
    def check_targets(self, y, n_rows, n_out, dtype, argument="y"):
        """Host targets ready for the kernel (cast, reshaped), or ValueError/TypeError naming ``argument``."""
        raise NotImplementedError

    def kernel(self, k, pred, targets, reduction, losses, grad, total=None, weights=None):
        """The backend's loss op: its float, or None with the value in ``total[0]``;
        ``weights`` (N,) row weights or None (kernels.spec, "losses")."""
        raise NotImplementedError

    def mean_count(self, targets, pred_shape):
        """What a MEAN over these targets divides by."""
        return int(np.prod(pred_shape))

    def default_metrics(self, n_out):
        """The metric names a Trainer on this loss and a model of ``n_out`` outputs reports
        when given none: what means something for the task (no accuracy for a regression)."""
        return ()

    # Shared mechanics.
    def forward_backward(self, k, pred, targets, grad, total=None, weights=None):
        """The reduced loss of device arrays (into the device array ``total[0]`` when given,
        returning None); d loss / d pred into ``grad`` (if not None). ``weights``: the
        device (N,) row weights of fit's class_weight and sample_weight, or None: row i's
        loss counts ``w_i`` times, the sum divided as unweighted (Keras semantics)."""
        return self.kernel(k, pred, targets, REDUCTIONS[self.reduction], None, grad, total, weights)

    def sum_and_count(self, k, pred, targets, host_targets, total=None):
        """(sum of per-sample losses, what a mean divides by): to aggregate over batches.
        With ``total`` the sum goes to ``total[0]`` on the device and comes back as None."""
        return (self.kernel(k, pred, targets, spec.SUM, None, None, total),
                self.mean_count(host_targets, pred.shape))

    def __call__(self, pred, target):
        """The loss of host arrays ``pred`` (logits) and ``target`` on the default backend."""
        pred = as_numeric_array(pred, "pred")
        if pred.ndim == 1:
            pred = pred[:, None]
        if pred.ndim != 2 or pred.shape[0] == 0:
            raise ValueError(f"pred must be a non-empty 2-D array of logits; got shape {pred.shape}")
        check_finite(pred, "pred")
        dtype = pred.dtype if pred.dtype == np.float64 else np.dtype(np.float32)
        y = self.check_targets(target, pred.shape[0], pred.shape[1], dtype)
        k = backend_module.module(backend_module.get_backend())
        pred_d, y_d = k.to_device(pred, dtype), k.to_device(y, y.dtype)
        if self.reduction == "none":
            losses = k.empty(y.shape[:1] if isinstance(self, SoftmaxCrossEntropy) else pred.shape, dtype)
            self.kernel(k, pred_d, y_d, spec.NONE, losses, None)
            return k.to_host(losses).reshape(self._none_shape(target, losses.shape))
        return self.kernel(k, pred_d, y_d, REDUCTIONS[self.reduction], None, None)

    def _none_shape(self, target, shape):
        return shape


class MSE(Loss):
    """Mean squared error ``mean((pred - y)^2)`` over all elements."""

    name = "mse"

    def check_targets(self, y, n_rows, n_out, dtype, argument="y"):
        y = as_float_array(y, dtype, argument)
        if y.ndim == 1 and n_out == 1:
            y = y[:, None]
        if y.shape != (n_rows, n_out):
            raise ValueError(f"{argument} must have the shape of the model's output ({n_rows}, {n_out}); got {y.shape}")
        return y

    def kernel(self, k, pred, targets, reduction, losses, grad, total=None, weights=None):
        return k.mse(pred, targets, reduction, losses, grad, total, weights)

    def default_metrics(self, n_out):
        return ("mae",)  # a regression: an error in the targets' units, no accuracy

    def _none_shape(self, target, shape):
        return np.shape(target)


class Huber(MSE):
    """torch HuberLoss: ``d^2/2`` for ``|d| < delta`` else ``delta (|d| - delta/2)``."""

    name = "huber"

    def __init__(self, delta=1.0, reduction="mean"):
        super().__init__(reduction)
        self.delta = number(delta, "delta", low=0.0, low_open=True)

    def config(self):
        return {**super().config(), "delta": self.delta}

    def kernel(self, k, pred, targets, reduction, losses, grad, total=None, weights=None):
        return k.huber(pred, targets, self.delta, reduction, losses, grad, total, weights)


class BinaryCrossEntropy(Loss):
    """Sigmoid cross-entropy on logits, torch ``binary_cross_entropy_with_logits``: one
    independent probability per output, so several outputs are several binary labels
    (multilabel targets of the output's shape); the mean is over all elements."""

    name = "binary_cross_entropy"

    def check_targets(self, y, n_rows, n_out, dtype, argument="y"):
        y = as_float_array(y, dtype, argument)
        if y.ndim == 1 and n_out == 1:
            y = y[:, None]
        if y.shape != (n_rows, n_out):
            expected = f"({n_rows},) or ({n_rows}, 1)" if n_out == 1 else f"({n_rows}, {n_out})"
            raise ValueError(f"{argument} must have the shape of the model's output, {expected}; got {y.shape}")
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"{argument} must hold probabilities in [0, 1]; got values in [{y.min()}, {y.max()}]")
        return y

    def kernel(self, k, pred, targets, reduction, losses, grad, total=None, weights=None):
        return k.binary_cross_entropy(pred, targets, reduction, losses, grad, total, weights)

    def default_metrics(self, n_out):
        # one output: 0/1 labels; several are multilabel, where an argmax accuracy means nothing
        return ("accuracy",) if n_out == 1 else ()

    def _none_shape(self, target, shape):
        return np.shape(target)


class SoftmaxCrossEntropy(Loss):
    """Softmax cross-entropy on logits, torch ``cross_entropy`` semantics.

    Targets are class indices (N,) or (N, 1) (a column of them, whatever K) or
    distributions (N, K > 1). With smoothing ``e`` the target becomes
    ``(1 - e) t + e / K``; rows whose class is ``ignore_index`` count for nothing, and the
    mean divides by the rows kept.
    """

    name = "cross_entropy"

    def __init__(self, label_smoothing=0.0, ignore_index=None, reduction="mean"):
        super().__init__(reduction)
        self.label_smoothing = number(label_smoothing, "label_smoothing", low=0.0, high=1.0)
        self.ignore_index = None if ignore_index is None else number(ignore_index, "ignore_index", integer=True)

    def config(self):
        return {**super().config(), "label_smoothing": self.label_smoothing, "ignore_index": self.ignore_index}

    def check_targets(self, y, n_rows, n_out, dtype, argument="y"):
        y = as_numeric_array(y, argument)
        if y.ndim == 2 and y.shape[1] == 1 and y.shape[0] == n_rows:
            y = y[:, 0]  # a column of class indices (scikit-learn's and Keras' column vectors)
        if y.ndim == 2:
            if y.shape != (n_rows, n_out):
                raise ValueError(f"{argument} as class probabilities must have shape ({n_rows}, {n_out}); got {y.shape}")
            if self.ignore_index is not None:
                raise ValueError(f"ignore_index applies to class-index targets only; {argument} holds class probabilities")
            return as_float_array(y, dtype, argument)
        if y.ndim != 1 or y.shape[0] != n_rows:
            raise ValueError(f"{argument} must be class indices of shape ({n_rows},) or probabilities "
                             f"({n_rows}, {n_out}); got shape {y.shape}")
        if y.dtype.kind == "f":
            check_finite(y, argument)
            if not np.array_equal(y, np.round(y)):
                raise TypeError(f"{argument} as class indices must hold integers; got dtype {y.dtype} with fractional "
                                f"values. {self._task_hint(n_out)}")
        y = y.astype(np.int64, copy=False)
        kept = y if self.ignore_index is None else y[y != self.ignore_index]
        if kept.size and (kept.min() < 0 or kept.max() >= n_out):
            allowed = f"[0, {n_out})" + ("" if self.ignore_index is None else f" or ignore_index {self.ignore_index}")
            raise ValueError(f"{argument} must hold class indices in {allowed}; got values in [{kept.min()}, "
                             f"{kept.max()}]. {self._task_hint(n_out)}")
        return y

    @staticmethod
    def _task_hint(n_out):
        """What to say when targets do not fit this loss: they may be another task's."""
        hint = (f"The loss is cross_entropy (loss='cross_entropy' is the Trainer's default), which takes class "
                f"indices, one per row, for a model with one output per class (this one has {n_out})")
        if n_out == 1:
            return hint + ": for regression targets use loss='mse' (or 'huber'); for 0/1 labels, loss='binary_cross_entropy'"
        return hint + ": for regression targets use loss='mse' (or 'huber')"

    def default_metrics(self, n_out):
        return ("accuracy",)

    def kernel(self, k, pred, targets, reduction, losses, grad, total=None, weights=None):
        ignore = spec.NO_IGNORE if self.ignore_index is None else self.ignore_index
        return k.softmax_cross_entropy(pred, targets, self.label_smoothing, ignore, reduction, losses, grad, total,
                                       weights)

    def mean_count(self, targets, pred_shape):
        if targets.ndim == 2 or self.ignore_index is None:
            return pred_shape[0]
        return int(np.count_nonzero(targets != self.ignore_index))


_CLASSES = {cls.name: cls for cls in (MSE, Huber, BinaryCrossEntropy, SoftmaxCrossEntropy)}
NAMES = tuple(_CLASSES)


def get(loss, argument="loss") -> Loss:
    """A Loss from a name, a config dict or a Loss object."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, dict):
        options = dict(loss)
        return get(options.pop("name"), argument).__class__(**options)
    if not isinstance(loss, str):
        raise TypeError(f"{argument} must be a loss name or an engine.losses.Loss; got {type(loss).__name__}")
    if loss not in _CLASSES:
        raise ValueError(f"{argument} must be one of {', '.join(NAMES)}; got {loss!r}")
    return _CLASSES[loss]()
