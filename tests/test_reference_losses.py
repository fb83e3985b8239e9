"""kernels.reference losses checked against torch's definitions, written independently:
values from per-row Python loops (log-sum-exp by hand, torch's label-smoothing split into
nll + smooth terms, torch's BCE-with-logits formula), gradients by finite differences.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.reference as ref
from kernels import spec
from finite_differences import central_diff

REDUCTIONS = [spec.NONE, spec.MEAN, spec.SUM]
RED_IDS = ["none", "mean", "sum"]

# Central differences in float64, EPS = 1e-6: truncation ~ |f'''| EPS^2 / 6 ~ 1e-12,
# rounding ~ |f| 1e-16 / EPS ~ 1e-10 |f| with |f| <= ~100 here, so 1e-6 relative plus
# 1e-7 absolute is safe while wrong gradients (missing smoothing term, wrong count,
# un-ignored row) are off by > 1e-3.
FD_RTOL = 1e-6
FD_ATOL = 1e-7

# Loss values: the hand loop and NumPy sum and take logs in different orders; the
# per-row loss is a difference of O(|logit|) terms, so ~1e-15 absolute per row. 1e-12
# relative plus 1e-12 absolute covers it.
VAL_RTOL = 1e-12
VAL_ATOL = 1e-12

HYP = settings(max_examples=40, deadline=None)


def reduce_expected(per_sample, count, reduction):
    total = math.fsum(per_sample)
    return total / count if reduction == spec.MEAN else total


def check_loss(loss_fn, pred, per_sample_expected, count, reduction):
    """Run loss_fn(pred, reduction, losses, grad) and check value, losses, grad."""
    losses = np.full(np.shape(per_sample_expected), np.nan)
    grad = np.full(pred.shape, np.nan)
    value = loss_fn(pred, reduction, losses, grad)
    assert isinstance(value, float)
    assert value == pytest.approx(reduce_expected(np.ravel(per_sample_expected), count, reduction),
                                  rel=VAL_RTOL, abs=VAL_ATOL)
    # per-sample losses are torch's reduction="none" output whatever the reduction
    np.testing.assert_allclose(losses, per_sample_expected, rtol=VAL_RTOL, atol=VAL_ATOL)
    # for NONE the returned value is the sum, and grad its gradient: FD of the return
    numeric = central_diff(lambda: loss_fn(pred, reduction, None, None), pred)
    np.testing.assert_allclose(grad, numeric, rtol=FD_RTOL, atol=FD_ATOL)
    # outputs are optional and do not change the value
    assert loss_fn(pred, reduction, None, None) == value
    return value


# --------------------------------------------------------------- cross-entropy

def log_softmax_row(row):
    m = max(row)
    lse = m + math.log(math.fsum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def torch_ce_class(logits, y, smoothing, ignore_index):
    """Per-row torch cross_entropy with class targets: (1-e) nll + e/K * smooth, where
    smooth = -sum_k log p_k; ignored rows give 0. Returns (losses, kept count)."""
    n, k = logits.shape
    out, kept = [], 0
    for i in range(n):
        if y[i] == ignore_index:
            out.append(0.0)
            continue
        kept += 1
        logp = log_softmax_row(list(logits[i]))
        nll = -logp[int(y[i])]
        smooth = -math.fsum(logp)
        out.append((1 - smoothing) * nll + smoothing / k * smooth)
    return np.array(out), kept


def torch_ce_dense(logits, targets, smoothing):
    """Per-row torch cross_entropy with probability targets (smoothed towards uniform)."""
    n, k = logits.shape
    out = []
    for i in range(n):
        logp = log_softmax_row(list(logits[i]))
        out.append(-math.fsum(((1 - smoothing) * targets[i, c] + smoothing / k) * logp[c]
                              for c in range(k)))
    return np.array(out)


def ce_fn(targets, smoothing, ignore_index):
    def fn(pred, reduction, losses, grad):
        return ref.softmax_cross_entropy(pred, targets, smoothing, ignore_index, reduction, losses, grad)
    return fn


@pytest.mark.parametrize("reduction", REDUCTIONS, ids=RED_IDS)
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
@pytest.mark.parametrize("ignore", [False, True], ids=["all_rows", "some_ignored"])
def test_ce_class_targets(reduction, smoothing, ignore):
    rs = np.random.default_rng(1)
    n, k = 7, 4
    logits = rs.normal(scale=2.0, size=(n, k))
    y = rs.integers(0, k, size=n).astype(np.int64)
    ignore_index = spec.NO_IGNORE
    if ignore:
        # torch's default -100, and a value that is also a valid class elsewhere must
        # still be distinguished: use -100 here, a class id in the next test.
        ignore_index = -100
        y[[1, 4]] = -100
    per_row, kept = torch_ce_class(logits, y, smoothing, ignore_index)
    assert kept == (5 if ignore else 7)
    check_loss(ce_fn(y, smoothing, ignore_index), logits, per_row, kept, reduction)
    if ignore:
        grad = np.empty_like(logits)
        ref.softmax_cross_entropy(logits, y, smoothing, ignore_index, reduction, None, grad)
        assert (grad[[1, 4]] == 0).all()  # ignored rows get exactly no gradient


@pytest.mark.parametrize("reduction", REDUCTIONS, ids=RED_IDS)
def test_ce_ignore_index_that_is_a_class_id(reduction):
    """ignore_index may be any integer, e.g. class 2: those rows are dropped, MEAN
    divides by the rest (torch)."""
    rs = np.random.default_rng(2)
    logits = rs.normal(size=(6, 3))
    y = np.array([0, 2, 1, 2, 0, 1], dtype=np.int64)
    per_row, kept = torch_ce_class(logits, y, 0.2, 2)
    assert kept == 4
    check_loss(ce_fn(y, 0.2, 2), logits, per_row, kept, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS, ids=RED_IDS)
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_ce_dense_targets(reduction, smoothing):
    rs = np.random.default_rng(3)
    n, k = 5, 4
    logits = rs.normal(scale=1.5, size=(n, k))
    targets = rs.dirichlet(np.ones(k), size=n)
    targets[0] = [0, 1, 0, 0]  # a one-hot row among soft rows
    per_row = torch_ce_dense(logits, targets, smoothing)
    check_loss(ce_fn(targets, smoothing, spec.NO_IGNORE), logits, per_row, n, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS, ids=RED_IDS)
def test_ce_dense_targets_not_summing_to_one(reduction):
    """The spec's gradient p * sum_k t_k - t holds for any target rows (torch accepts
    unnormalised probabilities); FD would catch a gradient assuming sum t = 1."""
    rs = np.random.default_rng(4)
    logits = rs.normal(size=(4, 3))
    targets = rs.uniform(0, 1, size=(4, 3))  # row sums in (0, 3)
    per_row = torch_ce_dense(logits, targets, 0.1)
    check_loss(ce_fn(targets, 0.1, spec.NO_IGNORE), logits, per_row, 4, reduction)


def test_ce_class_matches_dense_onehot():
    """Class targets and their one-hot distribution give the same value and gradient."""
    rs = np.random.default_rng(5)
    logits = rs.normal(size=(6, 5))
    y = rs.integers(0, 5, size=6).astype(np.int64)
    onehot = np.eye(5)[y]
    for e in (0.0, 0.3):
        g1, g2 = np.empty_like(logits), np.empty_like(logits)
        v1 = ref.softmax_cross_entropy(logits, y, e, spec.NO_IGNORE, spec.MEAN, None, g1)
        v2 = ref.softmax_cross_entropy(logits, onehot, e, spec.NO_IGNORE, spec.MEAN, None, g2)
        assert v1 == pytest.approx(v2, rel=1e-14)
        np.testing.assert_allclose(g1, g2, rtol=1e-14, atol=1e-16)


def test_ce_huge_logits_finite():
    """log-sum-exp must be stabilised: logits 1e4 apart give loss 1e4 (closed form)."""
    logits = np.array([[1e4, 0.0], [0.0, 1e4], [1e4, 1e4]])
    y = np.array([1, 1, 0], dtype=np.int64)
    losses = np.empty(3)
    grad = np.empty_like(logits)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        value = ref.softmax_cross_entropy(logits, y, 0.0, spec.NO_IGNORE, spec.SUM, losses, grad)
    # row 0: -log softmax = 1e4 + log(1 + e^-1e4) = 1e4; row 1: log(1 + e^-1e4) = 0;
    # row 2: log 2
    np.testing.assert_allclose(losses, [1e4, 0.0, math.log(2.0)], rtol=1e-15, atol=1e-300)
    assert value == pytest.approx(1e4 + math.log(2.0), rel=1e-15)
    np.testing.assert_allclose(grad, [[1, -1], [0, 0], [-0.5, 0.5]], rtol=0, atol=1e-15)


def test_ce_mean_with_every_row_ignored_is_nan():
    """torch: a mean over zero kept rows is 0/0 = nan."""
    logits = np.zeros((3, 4))
    y = np.full(3, -100, dtype=np.int64)
    losses = np.empty(3)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = ref.softmax_cross_entropy(logits, y, 0.0, -100, spec.MEAN, losses, None)
    assert math.isnan(value)
    np.testing.assert_array_equal(losses, 0.0)
    assert ref.softmax_cross_entropy(logits, y, 0.0, -100, spec.SUM, None, None) == 0.0


# torch: with every row ignored and MEAN the loss is nan but the gradient is 0 (nll_loss
# backward only writes kept rows; the smoothing term is masked_fill'ed).
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_ce_mean_with_every_row_ignored_has_zero_gradient(smoothing):
    logits = np.random.default_rng(0).normal(size=(3, 4))
    y = np.full(3, -100, dtype=np.int64)
    grad = np.full_like(logits, 7.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref.softmax_cross_entropy(logits, y, smoothing, -100, spec.MEAN, None, grad)
    # a nan gradient would turn every parameter into nan at the next optimizer step
    np.testing.assert_array_equal(grad, 0.0)


@st.composite
def ce_cases(draw):
    n = draw(st.integers(1, 6))
    k = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    smoothing = draw(st.sampled_from([0.0, 0.05, 0.5, 0.9]))
    reduction = draw(st.sampled_from(REDUCTIONS))
    dense = draw(st.booleans())
    rs = np.random.default_rng(seed)
    logits = rs.normal(scale=draw(st.sampled_from([0.1, 1.0, 4.0])), size=(n, k))
    if dense:
        return logits, rs.dirichlet(np.ones(k), size=n), smoothing, spec.NO_IGNORE, reduction
    y = rs.integers(0, k, size=n).astype(np.int64)
    ignored = rs.random(n) < draw(st.sampled_from([0.0, 0.4]))
    if ignored.all():  # keep one row so MEAN is defined (all-ignored tested above)
        ignored[0] = False
    y[ignored] = -1
    return logits, y, smoothing, -1, reduction


@HYP
@given(ce_cases())
def test_ce_random_shapes(case):
    logits, targets, smoothing, ignore_index, reduction = case
    if targets.ndim == 1:
        per_row, count = torch_ce_class(logits, targets, smoothing, ignore_index)
    else:
        per_row, count = torch_ce_dense(logits, targets, smoothing), logits.shape[0]
    check_loss(ce_fn(targets, smoothing, ignore_index), logits, per_row, count, reduction)


# ----------------------------------------------------------------------- BCE

def torch_bce_with_logits(x, t):
    """torch's binary_cross_entropy_with_logits, elementwise:
    (1 - t) x + m + log(exp(-m) + exp(-x - m)) with m = max(-x, 0)."""
    m = max(-x, 0.0)
    return (1 - t) * x + m + math.log(math.exp(-m) + math.exp(-x - m))


def bce_fn(targets):
    def fn(pred, reduction, losses, grad):
        return ref.binary_cross_entropy(pred, targets, reduction, losses, grad)
    return fn


@pytest.mark.parametrize("reduction", REDUCTIONS, ids=RED_IDS)
@pytest.mark.parametrize("shape", [(9,), (9, 1), (3, 4)])
def test_bce(shape, reduction):
    rs = np.random.default_rng(6)
    x = rs.normal(scale=3.0, size=shape)
    t = rs.uniform(0, 1, size=shape)  # soft targets are allowed in torch
    t.reshape(-1)[:3] = [0.0, 1.0, 1.0]  # and hard ones
    expected = np.vectorize(torch_bce_with_logits)(x, t)
    check_loss(bce_fn(t), x, expected, x.size, reduction)


def test_bce_huge_logits_finite():
    x = np.array([1e4, -1e4, 1e4, -1e4])
    t = np.array([0.0, 1.0, 1.0, 0.0])
    losses = np.empty(4)
    grad = np.empty(4)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        value = ref.binary_cross_entropy(x, t, spec.SUM, losses, grad)
    # confident and wrong: loss |x|; confident and right: log(1 + e^-1e4) = 0
    np.testing.assert_array_equal(losses, [1e4, 1e4, 0.0, 0.0])
    assert value == 2e4
    np.testing.assert_array_equal(grad, [1.0, -1.0, 0.0, 0.0])


@HYP
@given(st.integers(1, 8), st.integers(0, 2**32 - 1), st.sampled_from(REDUCTIONS), st.booleans())
def test_bce_random(n, seed, reduction, column):
    rs = np.random.default_rng(seed)
    shape = (n, 1) if column else (n,)
    x = rs.normal(scale=5.0, size=shape)
    t = rs.uniform(0, 1, size=shape)
    expected = np.vectorize(torch_bce_with_logits)(x, t)
    check_loss(bce_fn(t), x, expected, n, reduction)


# ----------------------------------------------------------------- MSE, Huber

@pytest.mark.parametrize("reduction", REDUCTIONS, ids=RED_IDS)
@pytest.mark.parametrize("shape", [(8,), (4, 3)])
def test_mse(shape, reduction):
    rs = np.random.default_rng(7)
    x = rs.normal(size=shape)
    t = rs.normal(size=shape)
    expected = np.array([(a - b) ** 2 for a, b in zip(x.ravel(), t.ravel())]).reshape(shape)

    def fn(pred, red, losses, grad):
        return ref.mse(pred, t, red, losses, grad)
    check_loss(fn, x, expected, x.size, reduction)


def huber_scalar(x, t, delta):
    d = x - t
    return 0.5 * d * d if abs(d) < delta else delta * (abs(d) - 0.5 * delta)


@pytest.mark.parametrize("reduction", REDUCTIONS, ids=RED_IDS)
@pytest.mark.parametrize("delta", [0.7, 2.5])
def test_huber_both_sides_of_delta(delta, reduction):
    rs = np.random.default_rng(8)
    t = rs.normal(size=(3, 4))
    # |x - t| / delta on both sides of 1, none within 1e-3 of the switch (where the
    # second derivative jumps and FD would lose accuracy).
    ratios = np.array([0.05, -0.3, 0.6, -0.95, 0.999, -1.002, 1.2, -1.7, 3.0, -5.0, 0.0, 10.0])
    x = t + (ratios * delta).reshape(3, 4)
    expected = np.vectorize(huber_scalar)(x, t, delta)
    inside = np.abs(x - t) < delta
    assert inside.any() and (~inside).any()

    def fn(pred, red, losses, grad):
        return ref.huber(pred, t, delta, red, losses, grad)
    check_loss(fn, x, expected, x.size, reduction)


@HYP
@given(st.integers(1, 10), st.integers(0, 2**32 - 1), st.sampled_from(REDUCTIONS),
       st.floats(0.1, 3.0))
def test_huber_random(n, seed, reduction, delta):
    rs = np.random.default_rng(seed)
    t = rs.normal(size=n)
    d = rs.normal(scale=2 * delta, size=n)
    # keep FD points off the |d| = delta switch (see above)
    d = np.where(np.abs(np.abs(d) - delta) < 1e-3, d + 1e-2, d)
    x = t + d
    expected = np.vectorize(huber_scalar)(x, t, delta)

    def fn(pred, red, losses, grad):
        return ref.huber(pred, t, delta, red, losses, grad)
    check_loss(fn, x, expected, n, reduction)
