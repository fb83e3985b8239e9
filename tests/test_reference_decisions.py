"""kernels.reference's step decisions against hand-computed values and independent formulas:
guard_update (finite check, sticky flag, per-parameter then global norm clipping as Keras'
clipnorm and torch's clip_grad_norm_ define them), metric_sums (against engine.metrics'
host metrics and scikit-learn), the ``total=`` path of the losses and the ``status`` skip of
the optimizers.
"""
import math

import numpy as np
import pytest
from sklearn import metrics as sk

import engine
import kernels.reference as ref
from kernels import spec

INF = math.inf


def record(bad=0.0, reason=0.0, skip=0.0):
    status = np.zeros(spec.GUARD_SIZE)
    status[[spec.GUARD_BAD_STEP, spec.GUARD_REASON, spec.GUARD_SKIP]] = bad, reason, skip
    return status


def guard(loss, sq_norms, clip_norm=INF, clip_global_norm=INF, step=0, sticky=True, status=None, scale=None):
    """(seg_scale, status) after one guard_update; seg_scale starts at ``scale`` (default 7s,
    a value guard_update never writes, so that an untouched scale shows)."""
    sq_norms = np.asarray(sq_norms, dtype=np.float64)
    seg_scale = np.full(sq_norms.size, 7.0) if scale is None else scale
    status = record() if status is None else status
    ref.guard_update(np.array([loss]), sq_norms, clip_norm, clip_global_norm, step, sticky, seg_scale, status)
    return seg_scale, status


# ----------------------------------------------------------------- guard_update: clipping
def test_hand_computed_scales():
    # norms 3, 0, 4; clip_norm 2: c = 2/3, 1 (a zero norm), 1/2; clipped norms 2, 0, 2 and
    # a global norm of sqrt(8); clip_global_norm 1: g = 1 / (sqrt(8) + 1e-6).
    scale, status = guard(0.5, [9.0, 0.0, 16.0], clip_norm=2.0, clip_global_norm=1.0)
    g = 1.0 / (math.sqrt(8.0) + 1e-6)
    np.testing.assert_allclose(scale, [2.0 / 3.0 * g, g, 0.5 * g], rtol=1e-15)
    np.testing.assert_array_equal(status, record())


def test_inf_disables_both_clips():
    scale, status = guard(1.0, [1e30, 0.0, 4.0])
    np.testing.assert_array_equal(scale, [1.0, 1.0, 1.0])
    assert status[spec.GUARD_SKIP] == 0.0


def test_norms_within_the_limits_are_not_scaled():
    # each norm <= 5 and a global norm of 5 with clip_global_norm 5 + 2e-6 > 5 + 1e-6
    scale, _ = guard(1.0, [9.0, 16.0], clip_norm=5.0, clip_global_norm=5.0 + 2e-6)
    np.testing.assert_array_equal(scale, [1.0, 1.0])


def test_zero_gradient_keeps_scale_one():
    scale, _ = guard(1.0, [0.0, 0.0], clip_norm=1e-3, clip_global_norm=1e-3)
    # the global norm is 0: g = min(1, 1e-3 / 1e-6) = 1
    np.testing.assert_array_equal(scale, [1.0, 1.0])


def keras_then_torch(grads, clip_norm, clip_global_norm):
    """The gradients clipped per parameter (Keras clipnorm: g * c / max(||g||, c)) and then
    globally (torch clip_grad_norm_: coef = max_norm / (total_norm + 1e-6), clamped at 1);
    an infinite limit means no clipping of that kind."""
    clipped = grads if clip_norm == INF else [g * clip_norm / max(np.linalg.norm(g), clip_norm) for g in grads]
    total_norm = np.linalg.norm(np.concatenate(clipped))
    coef = min(clip_global_norm / (total_norm + 1e-6), 1.0)
    return [g * coef for g in clipped]


@pytest.mark.parametrize("clip_norm, clip_global_norm", [(INF, INF), (1.5, INF), (INF, 2.0), (1.5, 2.0),
                                                         (0.01, 100.0), (100.0, 0.01)])
def test_scales_match_clipnorm_then_clip_grad_norm(clip_norm, clip_global_norm):
    rng = np.random.default_rng(3)
    grads = [rng.normal(scale=s, size=n) for s, n in ((2.0, 30), (0.1, 5), (1.0, 1), (0.0, 4), (3.0, 17))]
    sq_norms = [float(np.dot(g, g)) for g in grads]
    scale, _ = guard(2.0, sq_norms, clip_norm, clip_global_norm)
    for s, (g, expected) in enumerate(zip(grads, keras_then_torch(grads, clip_norm, clip_global_norm))):
        np.testing.assert_allclose(g * scale[s], expected, rtol=1e-14, atol=0, err_msg=f"segment {s}")


# -------------------------------------------------------------- guard_update: finite check
@pytest.mark.parametrize("loss, sq_norms, reason", [
    (math.nan, [1.0, 2.0], spec.REASON_LOSS),
    (math.inf, [1.0, 2.0], spec.REASON_LOSS),
    (-math.inf, [1.0, 2.0], spec.REASON_LOSS),
    (1.0, [1.0, math.nan], spec.REASON_GRADIENT),
    (1.0, [math.inf, 2.0], spec.REASON_GRADIENT),
    (1.0, [1e308, 1e308], spec.REASON_GRADIENT),  # each finite, their sum overflows
    (math.nan, [math.nan, 1.0], spec.REASON_LOSS),  # the loss is named first
])
@pytest.mark.parametrize("sticky", [True, False])
def test_non_finite_step(loss, sq_norms, reason, sticky):
    scale, status = guard(loss, sq_norms, clip_norm=1.0, clip_global_norm=1.0, step=41, sticky=sticky)
    np.testing.assert_array_equal(scale, [7.0, 7.0])  # the scales of a skipped step are not written
    if sticky:
        np.testing.assert_array_equal(status, record(bad=42, reason=reason, skip=1))
    else:
        np.testing.assert_array_equal(status, record(skip=1))


def test_sticky_flag_keeps_the_first_bad_step():
    status = record()
    guard(1.0, [1.0], step=0, status=status)
    guard(math.nan, [1.0], step=1, status=status)
    for step, loss, sq in ((2, 1.0, 1.0), (3, 1.0, math.inf), (4, math.nan, 1.0)):
        scale, _ = guard(loss, [sq], clip_norm=0.5, step=step, status=status)
        np.testing.assert_array_equal(status, record(bad=2, reason=spec.REASON_LOSS, skip=1))
        np.testing.assert_array_equal(scale, [7.0])


def test_without_sticky_a_good_step_follows_a_bad_one():
    status = record()
    guard(math.nan, [1.0], step=5, sticky=False, status=status)
    assert status[spec.GUARD_SKIP] == 1.0
    scale, _ = guard(1.0, [4.0], clip_norm=1.0, step=6, sticky=False, status=status)
    np.testing.assert_array_equal(status, record())
    np.testing.assert_allclose(scale, [0.5], rtol=1e-15)


# --------------------------------------------------------------------------- metric_sums
def sums_of(kind, scores, targets, threshold=0.0, start=(0.0, 0.0)):
    sums = np.array(start, dtype=np.float64)
    ref.metric_sums(kind, threshold, scores, targets, sums)
    return sums


def host_metric(metric, targets, scores):
    metric.reset()
    metric.update(targets, scores)
    return metric.compute()


def classes(n, k, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=2.0, size=(n, k)), rng.integers(0, k, n)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("n, k", [(1, 2), (7, 3), (50, 10)])
def test_accuracy_classes(n, k):
    x, y = classes(n, k)
    total, count = sums_of(spec.METRIC_ACCURACY, x, y)
    assert count == n
    assert total == sk.accuracy_score(y, x.argmax(axis=1), normalize=False)
    assert total / count == host_metric(engine.metrics.Accuracy(), y, x)
    one_hot = np.eye(k)[y]
    np.testing.assert_array_equal(sums_of(spec.METRIC_ACCURACY, x, one_hot), [total, count])


def test_accuracy_ties_nan_and_unknown_classes():
    x = np.array([[1.0, 3.0, 3.0], [np.nan, 5.0, 0.0], [0.0, np.nan, np.nan], [2.0, 1.0, 0.0]])
    # first maximum: 1; a NaN is the maximum: 0 and 1; class -100 (an ignored row) is not counted
    np.testing.assert_array_equal(sums_of(spec.METRIC_ACCURACY, x, np.array([1, 0, 1, -100])), [3, 3])
    np.testing.assert_array_equal(sums_of(spec.METRIC_ACCURACY, x, np.array([2, 1, 2, 0])), [1, 4])


@pytest.mark.parametrize("k", [1, 4])
def test_accuracy_skips_ignored_rows(k):
    # torch's ignore_index rows (-100), and any class outside [0, max(K, 2)), count for nothing
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, k))
    y = rng.integers(0, max(k, 2), 30)
    y[[2, 7, 11]] = -100
    y[20] = max(k, 2)
    kept = (y >= 0) & (y < max(k, 2))
    predicted = x.argmax(axis=1) if k > 1 else (x[:, 0] > 0).astype(np.int64)
    total, count = sums_of(spec.METRIC_ACCURACY, x, y)
    assert count == 26
    assert total == sk.accuracy_score(y[kept], predicted[kept], normalize=False)
    assert total / count == host_metric(engine.metrics.Accuracy(), y, x)
    np.testing.assert_array_equal(sums_of(spec.METRIC_ACCURACY, x, np.full(30, -100), start=(2.0, 5.0)), [2, 5])


@pytest.mark.parametrize("from_logits", [True, False])
def test_accuracy_one_output(from_logits):
    x = np.array([[-0.2], [0.0], [0.3], [0.5], [0.7], [np.nan]], dtype=np.float32)
    t = np.array([[0.0], [1.0], [1.0], [1.0], [0.0], [0.0]], dtype=np.float32)
    metric = engine.metrics.Accuracy(from_logits=from_logits)
    total, count = sums_of(spec.METRIC_ACCURACY, x, t, threshold=metric.threshold)
    # threshold 0: hits at rows 0, 2, 3, 5 (NaN > 0 is false); threshold 0.5: rows 0, 5
    assert (total, count) == ((4, 6) if from_logits else (2, 6))
    assert total / count == host_metric(metric, t, x)
    np.testing.assert_array_equal(sums_of(spec.METRIC_ACCURACY, x, t[:, 0].astype(np.int64),
                                          threshold=metric.threshold), [total, count])


def test_accuracy_threshold_compares_in_the_dtype():
    x = np.array([[np.float32(0.1)]], dtype=np.float32)  # 0.1 rounded to float32 is above 0.1
    assert sums_of(spec.METRIC_ACCURACY, x, np.array([[0.0]], dtype=np.float32), threshold=0.1)[0] == 1


@pytest.mark.parametrize("shape", [(1, 1), (9, 1), (13, 4)])
def test_squared_and_absolute_error(shape):
    rng = np.random.default_rng(1)
    x, t = rng.normal(size=shape), rng.normal(size=shape)
    total, count = sums_of(spec.METRIC_SQUARED_ERROR, x, t)
    assert count == x.size
    assert total / count == pytest.approx(sk.mean_squared_error(t, x), rel=1e-14)
    assert total / count == pytest.approx(host_metric(engine.metrics.MSE(), t, x), rel=1e-14)
    total, count = sums_of(spec.METRIC_ABSOLUTE_ERROR, x, t)
    assert total / count == pytest.approx(sk.mean_absolute_error(t, x), rel=1e-14)
    assert total / count == pytest.approx(host_metric(engine.metrics.MAE(), t, x), rel=1e-14)


@pytest.mark.parametrize("n, k", [(1, 2), (8, 3), (40, 12)])
def test_cross_entropy_classes_and_rows(n, k):
    x, y = classes(n, k, seed=2)
    total, count = sums_of(spec.METRIC_CROSS_ENTROPY, x, y)
    assert count == n
    assert total / n == pytest.approx(sk.log_loss(y, softmax(x), labels=np.arange(k)), rel=1e-12)
    assert total / n == pytest.approx(host_metric(engine.metrics.CrossEntropy(), y, x), rel=1e-13)
    rows = np.random.default_rng(3).dirichlet(np.ones(k), size=n)
    total, _ = sums_of(spec.METRIC_CROSS_ENTROPY, x, rows)
    assert total == pytest.approx(-(rows * np.log(softmax(x))).sum(), rel=1e-12)
    assert total / n == pytest.approx(host_metric(engine.metrics.CrossEntropy(), rows, x), rel=1e-13)


def test_cross_entropy_one_output_is_sigmoid_bce():
    x = np.array([[-3.0], [0.2], [5.0], [-0.7]])
    t = np.array([[0.0], [1.0], [1.0], [0.0]])
    total, count = sums_of(spec.METRIC_CROSS_ENTROPY, x, t)
    assert count == 4
    assert total / count == pytest.approx(sk.log_loss(t[:, 0], 1 / (1 + np.exp(-x[:, 0]))), rel=1e-12)
    assert total / count == pytest.approx(host_metric(engine.metrics.CrossEntropy(), t, x), rel=1e-14)


def test_cross_entropy_skips_a_class_outside_the_logits():
    x, _ = classes(3, 4)
    log_p = np.log(softmax(x))
    np.testing.assert_allclose(sums_of(spec.METRIC_CROSS_ENTROPY, x, np.array([0, -100, 2])),
                               [-(log_p[0, 0] + log_p[2, 2]), 2], rtol=1e-14)
    np.testing.assert_allclose(sums_of(spec.METRIC_CROSS_ENTROPY, x, np.array([4, 1, 2])),
                               [-(log_p[1, 1] + log_p[2, 2]), 2], rtol=1e-14)
    z = np.array([[0.5], [-1.0], [2.0]])  # one output: classes 0 and 1, -100 skipped
    np.testing.assert_allclose(sums_of(spec.METRIC_CROSS_ENTROPY, z, np.array([1, -100, 0])),
                               [np.log1p(np.exp(-0.5)) + np.log1p(np.exp(2.0)), 2], rtol=1e-14)


def test_cross_entropy_with_ignored_rows_is_the_loss_with_ignore_index():
    x, y = classes(40, 5, seed=6)
    y[::7] = -100
    total, count = sums_of(spec.METRIC_CROSS_ENTROPY, x, y)
    assert count == np.count_nonzero(y != -100)
    loss = ref.softmax_cross_entropy(x, y, 0.0, -100, spec.MEAN, None, None)
    assert total / count == pytest.approx(loss, rel=1e-13)
    kept = y != -100
    assert total / count == pytest.approx(sk.log_loss(y[kept], softmax(x[kept]), labels=np.arange(5)), rel=1e-12)


def test_sums_accumulate():
    x, y = classes(10, 3)
    first = sums_of(spec.METRIC_CROSS_ENTROPY, x[:4], y[:4])
    both = sums_of(spec.METRIC_CROSS_ENTROPY, x[4:], y[4:], start=first)
    np.testing.assert_allclose(both, sums_of(spec.METRIC_CROSS_ENTROPY, x, y), rtol=1e-14)


def test_unknown_metric_kind():
    with pytest.raises(ValueError, match="kind"):
        sums_of(17, *classes(2, 2))


# ------------------------------------------------------------ losses: the total= path
def loss_cases():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 4))
    y = np.array([0, 3, -100, 1, 2, -100])
    t = rng.uniform(size=(6, 4))
    return {
        "softmax_cross_entropy": lambda red, total: ref.softmax_cross_entropy(x, y, 0.1, -100, red, None, None, total),
        "softmax_cross_entropy_all_ignored": lambda red, total: ref.softmax_cross_entropy(
            x, np.full(6, -100), 0.0, -100, red, None, None, total),
        "binary_cross_entropy": lambda red, total: ref.binary_cross_entropy(x, t, red, None, None, total),
        "mse": lambda red, total: ref.mse(x, t, red, None, None, total),
        "huber": lambda red, total: ref.huber(x, t, 0.5, red, None, None, total),
    }


@pytest.mark.parametrize("case", sorted(loss_cases()))
@pytest.mark.parametrize("reduction", [spec.MEAN, spec.SUM, spec.NONE])
def test_loss_total_is_the_returned_float(case, reduction):
    op = loss_cases()[case]
    value = op(reduction, None)
    total = np.full(1, 123.0)
    assert op(reduction, total) is None
    np.testing.assert_array_equal(total, [value])  # NaN (all ignored, MEAN) equals NaN here
