"""What the trainer decides between the backward and the update, and its streaming
metrics, compiled (spec.Backend.guard_update, spec.Backend.metric_sums).

Both are serial (:data:`kernels.cpu.jit.small_kernel`): guard_update walks a few
segments, metric_sums makes one pass over a batch's logits, which the loss has just
read and left in cache. Neither uses fastmath: guard_update must round as the reference
(its scales multiply every gradient), and metric_sums computes in float64 as the host
metrics of engine.metrics do.
"""
import math

import numpy as np

from .. import spec
from .jit import small_kernel
from .vecmath import cast_to

_BAD, _REASON, _SKIP = spec.GUARD_BAD_STEP, spec.GUARD_REASON, spec.GUARD_SKIP
_LOSS, _GRADIENT = float(spec.REASON_LOSS), float(spec.REASON_GRADIENT)
_EPS = spec.CLIP_NORM_EPS
_ACCURACY, _SQUARED, _ABSOLUTE, _CROSS_ENTROPY = (
    spec.METRIC_ACCURACY, spec.METRIC_SQUARED_ERROR, spec.METRIC_ABSOLUTE_ERROR, spec.METRIC_CROSS_ENTROPY)


@small_kernel
def _guard_update(total, sq_norms, clip_norm, clip_global_norm, step, sticky, seg_scale, status):
    """spec.Backend.guard_update: ``seg_scale[s] = c_s * g`` with
    ``c_s = min(1, clip_norm / sqrt(sq_s))`` (1 where sq_s == 0) and
    ``g = min(1, clip_global_norm / (sqrt(sum_s sq_s c_s c_s) + CLIP_NORM_EPS))``, after the
    sticky flag and the finite check of ``total[0]`` and ``sum_s sq_s``."""
    if status[_BAD] != 0.0:
        status[_SKIP] = 1.0
        return
    loss_finite = math.isfinite(total[0])
    sq_sum = 0.0
    for s in range(sq_norms.size):
        sq_sum += sq_norms[s]
    if not (loss_finite and math.isfinite(sq_sum)):
        status[_SKIP] = 1.0
        if sticky:
            status[_BAD] = step + 1.0
            status[_REASON] = _GRADIENT if loss_finite else _LOSS
        return
    status[_SKIP] = 0.0
    clipped = 0.0
    for s in range(sq_norms.size):
        sq = sq_norms[s]
        c = min(1.0, clip_norm / math.sqrt(sq)) if sq > 0.0 else 1.0
        seg_scale[s] = c
        clipped += sq * c * c
    g = min(1.0, clip_global_norm / (math.sqrt(clipped) + _EPS))
    for s in range(sq_norms.size):
        seg_scale[s] *= g


def guard_update(total, sq_norms, clip_norm, clip_global_norm, step, sticky, seg_scale, status):
    _guard_update(total, sq_norms, float(clip_norm), float(clip_global_norm), int(step), bool(sticky),
                  seg_scale, status)


@small_kernel
def _argmax(row):
    """The first maximum of a 1-D row, a NaN counting as the maximum (NumPy's argmax)."""
    best, m = 0, row[0]
    if m != m:
        return 0
    for j in range(1, row.size):
        v = row[j]
        if v != v:
            return j
        if v > m:
            best, m = j, v
    return best


@small_kernel
def _row_cross_entropy(x, label, target, classes):
    """``-log softmax(x)[label]`` (a label in [0, K): the caller skips the others) or
    ``-sum_k target_k log softmax(x)_k``, in float64."""
    k = x.size
    m = np.float64(x[0])
    for j in range(1, k):
        v = np.float64(x[j])
        if v > m or v != v:
            m = v
    s = 0.0
    for j in range(k):
        s += math.exp(np.float64(x[j]) - m)
    log_s = math.log(s)
    if classes:
        return log_s - (np.float64(x[label]) - m)
    total = 0.0
    for j in range(k):
        total += np.float64(target[j]) * (log_s - (np.float64(x[j]) - m))
    return total


@small_kernel
def _metric_sums(kind, threshold, scores, labels, rows, classes, sums):
    """spec.Backend.metric_sums over the rows of ``scores``: class targets in ``labels``
    (when ``classes``) or target rows in ``rows``; totals in float64. Accuracy and
    cross-entropy skip a class target outside [0, max(K, 2))."""
    n, k = scores.shape
    threshold = cast_to(threshold, scores)
    errors = kind == _SQUARED or kind == _ABSOLUTE
    n_classes = max(k, 2)
    total = 0.0
    kept = 0
    for i in range(n):
        x = scores[i]
        label = labels[i] if classes else 0
        target = rows[i] if not classes else rows[0]
        if classes and not errors and not (0 <= label < n_classes):
            continue
        kept += 1
        if kind == _ACCURACY:
            if k > 1:
                hit = _argmax(x) == (label if classes else _argmax(target))
            else:
                hit = (x[0] > threshold) == ((label if classes else target[0]) > 0.5)
            total += 1.0 if hit else 0.0
        elif errors:
            for j in range(k):
                d = np.float64(x[j]) - np.float64(target[j])
                total += d * d if kind == _SQUARED else abs(d)
        elif k == 1:  # cross-entropy of one logit: the sigmoid BCE
            z = np.float64(x[0])
            t = np.float64(label) if classes else np.float64(target[0])
            total += max(z, 0.0) - z * t + math.log1p(math.exp(-abs(z)))
        else:
            total += _row_cross_entropy(x, label, target, classes)
    sums[0] += total
    sums[1] += kept * k if errors else kept


# Stand-ins for the target form not given, by scores dtype: the kernel compiles once per
# dtype rather than once per target form.
_NO_LABELS = np.zeros(1, np.int64)
_NO_ROWS = {np.dtype(t): np.zeros((1, 1), t) for t in (np.float32, np.float64)}


def metric_sums(kind, threshold, scores, targets, sums):
    if kind not in (_ACCURACY, _SQUARED, _ABSOLUTE, _CROSS_ENTROPY):
        raise ValueError(f"kind must be one of kernels.spec's METRIC_* codes; got {kind!r}")
    if targets.ndim == 1:
        rows = _NO_ROWS.get(scores.dtype)
        if rows is None:  # another dtype: the kernel will say it does not support it
            rows = np.zeros((1, 1), scores.dtype)
        _metric_sums(kind, float(threshold), scores, targets, rows, True, sums)
    else:
        _metric_sums(kind, float(threshold), scores, _NO_LABELS, targets, False, sums)
