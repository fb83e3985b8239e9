"""The step decisions of the fast backends against kernels.reference: guard_update,
metric_sums, the ``total=`` path of the losses and the ``status`` skip of the optimizers.

Inputs reach the fast backend through ``fast.to_device`` and results come back through
``fast.to_host``, so the same tests run on CuPy where a GPU is present.
"""
import math

import numpy as np
import pytest

from conftest import FAST_BACKENDS, TOLERANCES, load_backend
from test_reference_decisions import record
from kernels import spec

INF = math.inf
F64 = TOLERANCES[np.float64]


# --------------------------------------------------------------------------- guard_update
def run_guard(backend, steps, sq_norms, clip_norm, clip_global_norm, sticky):
    """(seg_scale, status) on the host after each (step, loss, squared-norm factor) of ``steps``,
    applied in order to one record and one seg_scale (starting at 7s)."""
    seg_scale = backend.to_device(np.full(len(sq_norms), 7.0), np.float64)
    status = backend.to_device(record(), np.float64)
    history = []
    for step, loss, factor in steps:
        total = backend.to_device(np.array([loss]), np.float64)
        with np.errstate(invalid="ignore"):  # 0 * inf: a NaN norm is one of the cases
            sq = backend.to_device(np.asarray(sq_norms, dtype=np.float64) * factor, np.float64)
        backend.guard_update(total, sq, clip_norm, clip_global_norm, step, sticky, seg_scale, status)
        history.append((backend.to_host(seg_scale).copy(), backend.to_host(status).copy()))
    return history


SQ_NORMS = {
    "one": [2.25],
    "odd": [9.0, 0.0, 16.0, 1e-12, 3.0],
    "model": list(np.random.default_rng(0).uniform(0.0, 50.0, 23)) + [0.0],
}
CLIPS = [(INF, INF), (1.0, INF), (INF, 2.5), (0.7, 1.3), (1e-8, 1e9)]
# Trajectories of good and bad steps (NaN loss, Inf and NaN gradient norms, both); the
# first bad step of each has a different reason.
STEPS = {
    "loss_first": [(0, 1.5, 1.0), (1, 0.2, 4.0), (2, math.nan, 1.0), (3, 1.0, math.inf), (4, 0.5, 1.0),
                   (5, math.inf, math.nan), (6, 2.0, 0.5), (7, 1.0, math.nan)],
    "gradient_first": [(10, 1.0, 0.1), (11, 1.0, math.inf), (12, math.nan, 1.0), (13, 3.0, 2.0)],
}


@pytest.mark.parametrize("sizes", sorted(SQ_NORMS))
@pytest.mark.parametrize("clip", CLIPS, ids=str)
@pytest.mark.parametrize("sticky", [True, False])
@pytest.mark.parametrize("steps", sorted(STEPS))
def test_guard_update(fast, ref, sizes, clip, sticky, steps):
    with np.errstate(invalid="ignore", over="ignore"):
        expected = run_guard(ref, STEPS[steps], SQ_NORMS[sizes], *clip, sticky)
    got = run_guard(fast, STEPS[steps], SQ_NORMS[sizes], *clip, sticky)
    assert any(s[spec.GUARD_SKIP] for _, s in expected) and not all(s[spec.GUARD_SKIP] for _, s in expected)
    for i, ((scale, status), (ref_scale, ref_status)) in enumerate(zip(got, expected)):
        np.testing.assert_array_equal(status, ref_status, err_msg=f"status after step {i}")
        # sums of a few float64 terms, in another order than NumPy's
        np.testing.assert_allclose(scale, ref_scale, err_msg=f"seg_scale after step {i}", **F64)


def test_guard_update_sum_overflow(fast, ref):
    for backend in (fast, ref):
        status = backend.to_device(record(), np.float64)
        seg_scale = backend.to_device(np.ones(2), np.float64)
        with np.errstate(over="ignore"):
            backend.guard_update(backend.to_device(np.array([1.0]), np.float64),
                                 backend.to_device(np.array([1e308, 1e308]), np.float64), INF, INF, 9, True,
                                 seg_scale, status)
        np.testing.assert_array_equal(backend.to_host(status), record(bad=10, reason=spec.REASON_GRADIENT, skip=1))


# ---------------------------------------------------------------------------- metric_sums
def metric_inputs(n, k, dtype, targets, seed=0):
    """(scores, targets) on the host: ``targets`` "classes" (int64 in [0, max(k, 2)), with
    two ignored rows of -100 when n > 4), "kept_classes" (none ignored), "one_hot", "rows"
    (normal) or "labels" (0/1 rows)."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(scale=3.0, size=(n, k)).astype(dtype)
    if targets in ("classes", "kept_classes"):
        t = rng.integers(0, max(k, 2), n)
        if n > 4 and targets == "classes":
            t[[1, n - 2]] = -100
        return scores, t
    if targets == "one_hot":
        return scores, np.eye(k, dtype=dtype)[rng.integers(0, k, n)]
    if targets == "labels":
        return scores, (rng.uniform(size=(n, k)) > 0.5).astype(dtype)
    return scores, rng.normal(size=(n, k)).astype(dtype)


def run_metric(backend, kind, threshold, scores, targets, start=(0.0, 0.0)):
    sums = backend.to_device(np.array(start), np.float64)
    backend.metric_sums(kind, threshold, backend.to_device(scores, scores.dtype),
                        backend.to_device(targets, targets.dtype), sums)
    return backend.to_host(sums).copy()


def assert_sums_close(fast, ref, kind, threshold, scores, targets, start=(0.0, 0.0)):
    with np.errstate(invalid="ignore", over="ignore"):
        expected = run_metric(ref, kind, threshold, scores, targets, start)
    got = run_metric(fast, kind, threshold, scores, targets, start)
    # Both compute in float64 from the same inputs and differ only in the order of the sums.
    np.testing.assert_allclose(got, expected, **F64)


SHAPES = [(1, 1), (1, 3), (7, 1), (7, 2), (33, 17), (256, 10)]
KINDS = {"accuracy": spec.METRIC_ACCURACY, "squared": spec.METRIC_SQUARED_ERROR,
         "absolute": spec.METRIC_ABSOLUTE_ERROR, "cross_entropy": spec.METRIC_CROSS_ENTROPY}
TARGETS = {spec.METRIC_ACCURACY: ("classes", "kept_classes", "one_hot", "labels"),
           spec.METRIC_SQUARED_ERROR: ("rows",), spec.METRIC_ABSOLUTE_ERROR: ("rows",),
           spec.METRIC_CROSS_ENTROPY: ("classes", "kept_classes", "one_hot", "rows", "labels")}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_metric_sums(fast, ref, dtype, kind, shape):
    kind = KINDS[kind]
    for targets in TARGETS[kind]:
        scores, t = metric_inputs(*shape, dtype, targets)
        for threshold in (0.0, 0.5, 0.1):
            assert_sums_close(fast, ref, kind, threshold, scores, t, start=(2.5, 3.0))


def test_metric_sums_non_finite_scores(fast, ref, dtype):
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(6, 4)).astype(dtype)
    scores[0] = np.nan                      # all NaN
    scores[1, 2] = np.nan                   # one NaN: argmax 2
    scores[2, 1] = np.inf                   # inf logit
    scores[3] = [-np.inf, 1.0, -np.inf, 0.0]
    scores[4] = [np.inf, np.inf, 0.0, 1.0]  # inf - inf
    classes = np.array([0, 2, 1, 1, 0, 3])
    rows = np.eye(4, dtype=dtype)[classes]
    for kind in KINDS.values():
        for targets in ((rows,) if kind in (spec.METRIC_SQUARED_ERROR, spec.METRIC_ABSOLUTE_ERROR)
                        else (classes, rows)):
            assert_sums_close(fast, ref, kind, 0.0, scores, targets)
    one = scores[:, :1].copy()
    one[1, 0] = np.inf
    for kind in KINDS.values():
        assert_sums_close(fast, ref, kind, 0.0, one, rows[:, :1].copy())


def test_metric_sums_threshold_in_the_dtype(fast, ref, dtype):
    # 0.1 rounded to float32 lies above 0.1: compared in float64 it would count as a hit
    scores = np.array([[0.1], [-0.5], [0.2]], dtype=dtype)
    labels = np.array([[0.0], [0.0], [1.0]], dtype=dtype)
    assert_sums_close(fast, ref, spec.METRIC_ACCURACY, 0.1, scores, labels)
    assert run_metric(fast, spec.METRIC_ACCURACY, 0.1, scores, labels)[0] == 3


@pytest.mark.parametrize("k", [1, 5, 1500])  # metric_elements, a warp per row, a block per row
def test_metric_sums_skip_ignored_rows(fast, ref, dtype, k):
    # a class outside [0, max(k, 2)) adds to neither the total nor the count
    scores, t = metric_inputs(9, k, dtype, "classes")
    t[4] = max(k, 2)
    kept = (t >= 0) & (t < max(k, 2))
    for kind in (spec.METRIC_ACCURACY, spec.METRIC_CROSS_ENTROPY):
        assert_sums_close(fast, ref, kind, 0.0, scores, t, start=(1.5, 2.0))
        got = run_metric(fast, kind, 0.0, scores, t)
        assert got[1] == 6
        np.testing.assert_allclose(got, run_metric(ref, kind, 0.0, scores[kept], t[kept]), **F64)
        all_ignored = np.full(9, -100)
        np.testing.assert_array_equal(run_metric(fast, kind, 0.0, scores, all_ignored, start=(1.5, 2.0)),
                                      [1.5, 2.0])


def test_metric_sums_non_contiguous(fast, ref, dtype):
    scores, t = metric_inputs(12, 6, dtype, "rows")
    for kind in KINDS.values():
        expected = run_metric(ref, kind, 0.0, scores[::2, 1:], np.ascontiguousarray(t[::2, 1:]))
        device_scores = fast.to_device(scores, dtype)[::2, 1:]
        sums = fast.to_device(np.zeros(2), np.float64)
        fast.metric_sums(kind, 0.0, device_scores, fast.to_device(np.ascontiguousarray(t[::2, 1:]), dtype), sums)
        np.testing.assert_allclose(fast.to_host(sums), expected, **F64)


def test_metric_sums_unknown_kind(fast):
    scores, t = metric_inputs(2, 2, np.float32, "classes")
    with pytest.raises(ValueError, match="kind"):
        run_metric(fast, 9, 0.0, scores, t)


# ------------------------------------------------------------------ losses: total=
def loss_calls(n, k, dtype, seed=0):
    """{name: (op name, inputs, extra arguments)} of the four losses, awkward cases included."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=2.0, size=(n, k)).astype(dtype)
    classes = rng.integers(0, k, n)
    classes[::3] = -100
    return {
        "ce_classes": ("softmax_cross_entropy", (x, classes), (0.1, -100)),
        "ce_all_ignored": ("softmax_cross_entropy", (x, np.full(n, -100)), (0.0, -100)),
        "ce_rows": ("softmax_cross_entropy", (x, rng.dirichlet(np.ones(k), n).astype(dtype)), (0.0, spec.NO_IGNORE)),
        "bce": ("binary_cross_entropy", (x, rng.uniform(size=(n, k)).astype(dtype)), ()),
        "mse": ("mse", (x, rng.normal(size=(n, k)).astype(dtype)), ()),
        "huber": ("huber", (x, rng.normal(size=(n, k)).astype(dtype)), (0.7,)),
    }


def call_loss(backend, op, inputs, extra, reduction, total):
    """(returned value, gradient on the host) of one loss call; ``extra`` goes between the
    targets and the reduction (smoothing and ignore_index, or huber's delta)."""
    pred, targets = (backend.to_device(a, a.dtype) for a in inputs)
    grad = backend.zeros(pred.shape, pred.dtype)
    value = getattr(backend, op)(pred, targets, *extra, reduction, None, grad, total)
    return value, backend.to_host(grad).copy()


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (64, 10), (5, 1)], ids=str)
@pytest.mark.parametrize("reduction", [spec.MEAN, spec.SUM])
def test_loss_total_path(fast, ref, dtype, shape, reduction):
    for name, (op, inputs, extra) in loss_calls(*shape, dtype).items():
        value, grad = call_loss(fast, op, inputs, extra, reduction, None)
        assert isinstance(value, float), (name, type(value))
        total = fast.to_device(np.array([123.0]), np.float64)
        returned, total_grad = call_loss(fast, op, inputs, extra, reduction, total)
        assert returned is None, name
        np.testing.assert_array_equal(fast.to_host(total), [value], err_msg=name)
        np.testing.assert_array_equal(total_grad, grad, err_msg=f"{name}: the gradient with total=")
        ref_total = np.array([0.0])
        with np.errstate(invalid="ignore", divide="ignore"):
            call_loss(ref, op, inputs, extra, reduction, ref_total)
        np.testing.assert_allclose(fast.to_host(total), ref_total, err_msg=name, **TOLERANCES[dtype])


# ------------------------------------------------------------- optimizers: status skip
# case: (op, state buffers, arguments after clip_value of update ``step``: no L1 rule
# after the step, then the hyperparameters)
OPTIMIZERS = {
    "sgd": ("sgd", 1, lambda step: (0.1, 0.9, 0.0, True, False, step == 1)),
    "adagrad": ("adagrad", 1, lambda step: (0.1, 1e-10)),
    "rmsprop": ("rmsprop", 3, lambda step: (0.01, 0.99, 1e-8, 0.5, True)),
    "adadelta": ("adadelta", 2, lambda step: (1.0, 0.9, 1e-6)),
    "adam": ("adam", 3, lambda step: (1e-2, 0.9, 0.999, 1e-8, step, False, True)),
    "adamw": ("adam", 3, lambda step: (1e-2, 0.9, 0.999, 1e-8, step, True, True)),
    "nadam": ("nadam", 2, lambda step: (2e-3, 0.9, 0.999, 1e-8, step, 0.9, 0.91, 0.9 ** step)),
}
SEGMENTS = {"one": [1], "odd": [7, 0, 13, 33], "blocks": [70, 16384 * 2 + 3, 1, 300]}


@pytest.fixture(params=[pytest.param("reference"), *FAST_BACKENDS])
def any_backend(request):
    """The reference or a fast backend: the skip is checked on each on its own terms."""
    return load_backend(request.param)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("segments", sorted(SEGMENTS))
def test_status_skip_leaves_everything_bit_identical(any_backend, dtype, name, segments):
    fast = any_backend
    op_name, n_state, hyper = OPTIMIZERS[name]
    sizes = SEGMENTS[segments]
    n = sum(sizes)
    rng = np.random.default_rng(2)
    offsets = fast.to_device(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), np.int64)
    common = (offsets, fast.to_device(rng.uniform(0.5, 1.0, len(sizes)), np.float64),
              fast.to_device(np.full(len(sizes), 0.01), np.float64), 0.9, None, spec.L1_GRADIENT)
    params = fast.to_device(rng.normal(size=n), dtype)
    state = [fast.to_device(np.zeros(n), dtype) for _ in range(n_state)]
    op = getattr(fast, op_name)
    op(params, fast.to_device(rng.normal(size=n), dtype), *state, *common, *hyper(1))  # non-zero state
    grads = fast.to_device(rng.normal(size=n), dtype)
    host = lambda arrays: [fast.to_host(a).copy() for a in arrays]
    before = host((params, *state))
    op(params, grads, *state, *common, *hyper(2), status=fast.to_device(record(skip=1), np.float64))
    for a, b in zip(host((params, *state)), before):
        np.testing.assert_array_equal(a, b)
    # GUARD_SKIP == 0 updates exactly as without a status, whatever else the record holds.
    twin = [fast.to_device(a.copy(), dtype) for a in before]  # to_device may not copy
    op(params, grads, *state, *common, *hyper(2), status=fast.to_device(record(bad=4, reason=2), np.float64))
    op(twin[0], grads, *twin[1:], *common, *hyper(2))
    assert not np.array_equal(fast.to_host(params), before[0])
    for a, b in zip(host((params, *state)), host(twin)):
        np.testing.assert_array_equal(a, b)
