"""Losses on logits with their gradients, in NumPy, torch semantics."""
import numpy as np

from .. import spec


def _rows(weights, ndim):
    """The (N,) row weights shaped to multiply an array of ``ndim`` dimensions by rows."""
    return weights.reshape(weights.shape + (1,) * (ndim - 1))


def _reduce(per_sample, count, reduction, losses, grad, grad_of_sum, total, weights):
    """Write the outputs of a loss and return its reduced value (None when ``total`` is
    given: the value goes to ``total[0]``).

    ``count`` is what MEAN divides by; ``grad_of_sum`` is d(sum of per_sample)/d(pred).
    A MEAN over nothing (every row ignored) is NaN, as in torch, with a zero gradient.
    ``weights`` (N,) or None: row i's per-sample losses become ``w_i * loss`` and its
    gradient ``grad_of_sum * (w_i * scale)``, each product rounded in the dtype.
    """
    dtype = grad_of_sum.dtype.type
    if weights is not None:
        per_sample = per_sample * _rows(weights, per_sample.ndim)
    if losses is not None:
        losses[...] = per_sample
    summed = float(per_sample.sum(dtype=np.float64))
    if reduction != spec.MEAN:
        scale = 1.0
    else:
        scale = 1.0 / count if count else 0.0
    if grad is not None:
        factor = dtype(scale) if weights is None else _rows(weights, grad_of_sum.ndim) * dtype(scale)
        grad[...] = grad_of_sum * factor
    if reduction != spec.MEAN:
        value = summed
    else:
        value = summed / count if count else float("nan")
    if total is None:
        return value
    total[0] = value
    return None


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits, targets, label_smoothing, ignore_index, reduction, losses, grad,
                          total=None, weights=None):
    spec.check_weights(weights, logits)
    n, k = logits.shape
    log_p = _log_softmax(logits)
    if targets.ndim == 1:
        kept = targets != ignore_index
        t = np.zeros_like(logits)
        t[np.flatnonzero(kept), targets[kept]] = 1.0
        t = (1.0 - label_smoothing) * t + label_smoothing / k
        t[~kept] = 0.0
        count = int(kept.sum())
    else:
        t = (1.0 - label_smoothing) * targets + label_smoothing / k
        count = n
    per_row = -(t * log_p).sum(axis=1)
    grad_of_sum = np.exp(log_p) * t.sum(axis=1, keepdims=True) - t
    return _reduce(per_row, count, reduction, losses, grad, grad_of_sum, total, weights)


def binary_cross_entropy(logits, targets, reduction, losses, grad, total=None, weights=None):
    spec.check_weights(weights, logits)
    per_element = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    e = np.exp(-np.abs(logits))
    sigmoid = np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return _reduce(per_element, logits.size, reduction, losses, grad, sigmoid - targets, total, weights)


def mse(pred, targets, reduction, losses, grad, total=None, weights=None):
    spec.check_weights(weights, pred)
    d = pred - targets
    return _reduce(d * d, pred.size, reduction, losses, grad, 2.0 * d, total, weights)


def huber(pred, targets, delta, reduction, losses, grad, total=None, weights=None):
    spec.check_weights(weights, pred)
    d = pred - targets
    a = np.abs(d)
    per_element = np.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))
    return _reduce(per_element, pred.size, reduction, losses, grad, np.clip(d, -delta, delta), total,
                   weights)
