"""What the trainer decides between the backward and the update, and its streaming
metrics, in NumPy (spec.Backend.guard_update, spec.Backend.metric_sums)."""
import numpy as np

from .. import spec


def guard_update(total, sq_norms, clip_norm, clip_global_norm, step, sticky, seg_scale, status):
    """Finite check of update ``step`` and its clip scales, per spec.Backend.guard_update:
    ``seg_scale[s] = c_s * g``, ``c_s = min(1, clip_norm / norm_s)`` (1 for a zero norm),
    ``g = min(1, clip_global_norm / (sqrt(sum_s sq_s c_s^2) + CLIP_NORM_EPS))``."""
    if status[spec.GUARD_BAD_STEP] != 0:
        status[spec.GUARD_SKIP] = 1.0
        return
    loss_finite = bool(np.isfinite(total[0]))
    with np.errstate(over="ignore"):  # a sum that overflows is what this looks for
        gradient_finite = bool(np.isfinite(np.sum(sq_norms)))
    if not (loss_finite and gradient_finite):
        status[spec.GUARD_SKIP] = 1.0
        if sticky:
            status[spec.GUARD_BAD_STEP] = step + 1
            status[spec.GUARD_REASON] = spec.REASON_GRADIENT if loss_finite else spec.REASON_LOSS
        return
    status[spec.GUARD_SKIP] = 0.0
    norms = np.sqrt(sq_norms)
    with np.errstate(divide="ignore"):  # a zero norm: its scale is 1, whatever clip_norm / 0 is
        per_segment = np.where(norms > 0, np.minimum(1.0, clip_norm / norms), 1.0)
    clipped_norm = np.sqrt(np.sum(sq_norms * per_segment * per_segment))
    seg_scale[...] = per_segment * min(1.0, clip_global_norm / (clipped_norm + spec.CLIP_NORM_EPS))


def metric_sums(kind, threshold, scores, targets, sums):
    """``sums += (total, count)`` of one batch for metric ``kind`` (spec.Backend.metric_sums),
    in float64; the accuracy threshold compares in the scores' dtype. Accuracy and
    cross-entropy skip a class target outside [0, max(K, 2)) (an ignore_index row): it
    adds to neither the total nor the count."""
    n, k = scores.shape
    if kind in (spec.METRIC_ACCURACY, spec.METRIC_CROSS_ENTROPY) and targets.ndim == 1:
        kept = (targets >= 0) & (targets < max(k, 2))
        scores, targets, n = scores[kept], targets[kept], int(np.count_nonzero(kept))
    x = scores.astype(np.float64)
    t = targets.astype(np.float64)
    if kind == spec.METRIC_ACCURACY:
        if k > 1:
            # np.argmax: the first maximum, a NaN counting as the maximum
            labels = targets if targets.ndim == 1 else np.argmax(targets, axis=1)
            total = np.count_nonzero(np.argmax(scores, axis=1) == labels)
        else:
            predicted = scores[:, 0] > scores.dtype.type(threshold)
            total = np.count_nonzero(predicted == (t.reshape(n) > 0.5))
        count = n
    elif kind in (spec.METRIC_SQUARED_ERROR, spec.METRIC_ABSOLUTE_ERROR):
        d = x - t
        total = np.sum(d * d) if kind == spec.METRIC_SQUARED_ERROR else np.sum(np.abs(d))
        count = n * k
    elif kind == spec.METRIC_CROSS_ENTROPY:
        if k == 1:
            z, y = x[:, 0], t.reshape(n)
            total = np.sum(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
        else:
            shifted = x - x.max(axis=1, keepdims=True)
            log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            if targets.ndim == 2:
                total = -np.sum(t * log_p)
            else:
                total = -np.sum(log_p[np.arange(n), targets])
        count = n
    else:
        raise ValueError(f"kind must be one of kernels.spec's METRIC_* codes; got {kind!r}")
    sums[0] += total
    sums[1] += count
