"""Losses of the fast backends (value, per-sample losses, gradient) against kernels.reference.

The fast backend gets its inputs through ``fast.to_device`` (views taken on its own
arrays) and its outputs from ``fast.zeros``; results are compared on the host.
"""
import math
import re

import numpy as np
import pytest

from conftest import TOLERANCES
from kernels import spec
from test_kernels_dense import parallel_cpu  # noqa: F401  (a fixture)

REDUCTIONS = {"none": spec.NONE, "mean": spec.MEAN, "sum": spec.SUM}
OUTPUTS = ["both", "losses", "grad", "neither"]  # which of losses/grad are given
CE_SHAPES = [(1, 1), (7, 13), (33, 5), (1, 1000), (64, 10)]
ELEMENT_SHAPES = [(1,), (1, 1), (7, 13), (1000,), (33, 5)]


def to_backend(backend, *arrays):
    """Host ``arrays`` as arrays of ``backend``, each in its own dtype (int64 targets too)."""
    return [backend.to_device(a, a.dtype) for a in arrays]


def run_loss(backend, op, pred, per_sample_shape, outputs, *args):
    """(value, losses, grad) of ``op(pred, *args, losses, grad)`` on arrays of ``backend``,
    the outputs brought to the host; absent outputs are None."""
    losses = backend.zeros(per_sample_shape, pred.dtype) if outputs in ("both", "losses") else None
    grad = backend.zeros(pred.shape, pred.dtype) if outputs in ("both", "grad") else None
    value = getattr(backend, op)(pred, *args, losses, grad)
    return value, *(None if a is None else backend.to_host(a) for a in (losses, grad))


def assert_loss_close(got, expected, dtype, what):
    tol = TOLERANCES[dtype]
    value, losses, grad = got
    ref_value, ref_losses, ref_grad = expected
    assert isinstance(value, float), type(value)
    np.testing.assert_allclose(value, ref_value, err_msg=f"{what}: reduced loss", **tol)
    for name, a, b in (("losses", losses, ref_losses), ("grad", grad, ref_grad)):
        assert (a is None) == (b is None), name
        if b is not None:
            np.testing.assert_allclose(a, b, err_msg=f"{what}: {name}", **tol)


def class_targets(n, k, seed, ignore_index=None, ignored=0.0):
    g = np.random.default_rng(seed)
    targets = g.integers(0, k, n).astype(np.int64)
    if ignore_index is not None:
        targets[g.random(n) < ignored] = ignore_index
    return targets


def logits_for(shape, dtype, seed, spread=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * spread).astype(dtype)


@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", REDUCTIONS.values(), ids=REDUCTIONS.keys())
@pytest.mark.parametrize("outputs", OUTPUTS)
def test_cross_entropy_class_targets(fast, ref, dtype, shape, smoothing, reduction, outputs):
    n, k = shape
    logits = logits_for(shape, dtype, seed=n * k)
    targets = class_targets(n, k, seed=1)
    args = (smoothing, spec.NO_IGNORE, reduction)
    got = run_loss(fast, "softmax_cross_entropy", *to_backend(fast, logits), (n,), outputs,
                   *to_backend(fast, targets), *args)
    expected = run_loss(ref, "softmax_cross_entropy", logits, (n,), outputs, targets, *args)
    assert_loss_close(got, expected, dtype, f"{shape}")


@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", REDUCTIONS.values(), ids=REDUCTIONS.keys())
def test_cross_entropy_ignore_index(fast, ref, dtype, ignore_index, smoothing, reduction):
    logits = logits_for((50, 7), dtype, seed=3)
    targets = class_targets(50, 7, seed=4, ignore_index=ignore_index, ignored=0.3)
    assert (targets == ignore_index).any()
    args = (smoothing, ignore_index, reduction)
    got = run_loss(fast, "softmax_cross_entropy", *to_backend(fast, logits), (50,), "both",
                   *to_backend(fast, targets), *args)
    expected = run_loss(ref, "softmax_cross_entropy", logits, (50,), "both", targets, *args)
    assert_loss_close(got, expected, dtype, f"ignore_index={ignore_index}")
    ignored = targets == ignore_index
    assert (got[1][ignored] == 0).all() and (got[2][ignored] == 0).all()


def test_cross_entropy_all_rows_ignored(fast, ref, dtype):
    logits = logits_for((4, 3), dtype, seed=5)
    targets = np.full(4, -100, np.int64)
    logits_f, targets_f = to_backend(fast, logits, targets)
    for reduction in REDUCTIONS.values():
        got = run_loss(fast, "softmax_cross_entropy", logits_f, (4,), "both", targets_f, 0.1, -100,
                       reduction)
        expected = run_loss(ref, "softmax_cross_entropy", logits, (4,), "both", targets, 0.1, -100,
                            reduction)
        assert (math.isnan(got[0]) and math.isnan(expected[0])) == (reduction == spec.MEAN)
        np.testing.assert_array_equal(got[2], expected[2])
        np.testing.assert_array_equal(got[1], expected[1])


def test_cross_entropy_target_out_of_range(fast):
    logits, targets = to_backend(fast, logits_for((3, 4), np.float32, seed=6),
                                 np.array([0, 4, 1], np.int64))
    with pytest.raises(IndexError):
        fast.softmax_cross_entropy(logits, targets, 0.0, spec.NO_IGNORE, spec.MEAN, None, None)


@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
@pytest.mark.parametrize("normalised", [True, False], ids=["distribution", "unnormalised"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", REDUCTIONS.values(), ids=REDUCTIONS.keys())
def test_cross_entropy_dense_targets(fast, ref, dtype, shape, normalised, smoothing, reduction):
    logits = logits_for(shape, dtype, seed=7)
    targets = np.random.default_rng(8).random(shape).astype(dtype)
    if normalised:
        targets /= targets.sum(axis=1, keepdims=True)
    args = (smoothing, spec.NO_IGNORE, reduction)
    logits_f, targets_f = to_backend(fast, logits, targets)
    for outputs in ("both", "neither"):
        got = run_loss(fast, "softmax_cross_entropy", logits_f, (shape[0],), outputs, targets_f,
                       *args)
        expected = run_loss(ref, "softmax_cross_entropy", logits, (shape[0],), outputs, targets,
                            *args)
        assert_loss_close(got, expected, dtype, f"{shape}, {outputs}")


def test_cross_entropy_extreme_logits(fast, ref, dtype):
    """Far-apart logits in one row: exponentials underflow to subnormal and zero."""
    logits = np.array([[0.0, -50.0, -90.0, -110.0, -800.0, 30.0],
                       [1e-3, 0.0, -1e-3, 2e-3, 0.0, 0.0]], dtype)
    targets = np.array([3, 0], np.int64)
    logits_f, targets_f = to_backend(fast, logits, targets)
    for smoothing in (0.0, 0.3):
        args = (smoothing, spec.NO_IGNORE, spec.SUM)
        got = run_loss(fast, "softmax_cross_entropy", logits_f, (2,), "both", targets_f, *args)
        expected = run_loss(ref, "softmax_cross_entropy", logits, (2,), "both", targets, *args)
        assert_loss_close(got, expected, dtype, f"smoothing={smoothing}")


def test_cross_entropy_strided_logits(fast, ref, dtype):
    wide = logits_for((20, 30), dtype, seed=9)
    targets = class_targets(20, 11, seed=10)
    args = (0.1, spec.NO_IGNORE, spec.MEAN)
    # Rows not adjacent, on either backend.
    got = run_loss(fast, "softmax_cross_entropy", fast.to_device(wide, dtype)[:, 5:16], (20,),
                   "both", *to_backend(fast, targets), *args)
    expected = run_loss(ref, "softmax_cross_entropy", wide[:, 5:16], (20,), "both", targets, *args)
    assert_loss_close(got, expected, dtype, "strided logits")


def test_cross_entropy_propagates_nan(fast):
    logits = logits_for((3, 5), np.float32, seed=11)
    logits[1, 2] = np.nan
    losses, grad = fast.zeros(3, np.float32), fast.zeros((3, 5), np.float32)
    value = fast.softmax_cross_entropy(*to_backend(fast, logits, np.array([0, 1, 2], np.int64)),
                                       0.0, spec.NO_IGNORE, spec.MEAN, losses, grad)
    losses, grad = fast.to_host(losses), fast.to_host(grad)
    assert math.isnan(value) and np.isnan(losses[1]) and np.isnan(grad[1]).all()
    assert np.isfinite(losses[[0, 2]]).all() and np.isfinite(grad[[0, 2]]).all()


def element_inputs(op, shape, dtype, seed):
    g = np.random.default_rng(seed)
    pred = (g.standard_normal(shape) * 3).astype(dtype)
    if op == "binary_cross_entropy":
        targets = g.random(shape).astype(dtype)  # probabilities, not only 0/1
        targets.reshape(-1)[::3] = 1.0
    else:
        targets = g.standard_normal(shape).astype(dtype)
    return pred, targets


# name: (op, arguments between targets and reduction)
ELEMENT_LOSSES = {"binary_cross_entropy": ("binary_cross_entropy", ()), "mse": ("mse", ()),
                  "huber": ("huber", (1.0,)), "huber_small_delta": ("huber", (0.3,))}


@pytest.mark.parametrize("name", ELEMENT_LOSSES)
@pytest.mark.parametrize("shape", ELEMENT_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS.values(), ids=REDUCTIONS.keys())
@pytest.mark.parametrize("outputs", OUTPUTS)
def test_elementwise_losses(fast, ref, dtype, name, shape, reduction, outputs):
    op, extra = ELEMENT_LOSSES[name]
    pred, targets = element_inputs(op, shape, dtype, seed=len(shape) + shape[0])
    pred_f, targets_f = to_backend(fast, pred, targets)
    got = run_loss(fast, op, pred_f, shape, outputs, targets_f, *extra, reduction)
    expected = run_loss(ref, op, pred, shape, outputs, targets, *extra, reduction)
    assert_loss_close(got, expected, dtype, f"{name} {shape}")


@pytest.mark.parametrize("name", ELEMENT_LOSSES)
def test_elementwise_losses_large_and_strided(fast, ref, dtype, name):
    """Several parallel blocks, and non-contiguous inputs and outputs."""
    op, extra = ELEMENT_LOSSES[name]
    pred, targets = element_inputs(op, (300, 70), dtype, seed=12)
    pred_f, targets_f = to_backend(fast, pred, targets)
    got = run_loss(fast, op, pred_f, pred.shape, "both", targets_f, *extra, spec.MEAN)
    expected = run_loss(ref, op, pred, pred.shape, "both", targets, *extra, spec.MEAN)
    assert_loss_close(got, expected, dtype, f"{name} (300, 70)")

    # Views of the backend's own arrays: inputs every other row, outputs column slices.
    losses_base, grad_base = (fast.to_device(np.full((150, 80), 5.0), dtype) for _ in range(2))
    losses, grad = losses_base[:, 10:67], grad_base[:, 10:67]
    value = getattr(fast, op)(pred_f[::2, 3:60], targets_f[::2, 3:60], *extra, spec.SUM, losses,
                              grad)
    expected = run_loss(ref, op, np.ascontiguousarray(pred[::2, 3:60]), (150, 57), "both",
                        targets[::2, 3:60], *extra, spec.SUM)
    losses_base, grad_base = fast.to_host(losses_base), fast.to_host(grad_base)
    assert_loss_close((value, losses_base[:, 10:67], grad_base[:, 10:67]), expected, dtype,
                      f"{name} strided")
    assert (losses_base[:, :10] == 5).all() and (grad_base[:, 67:] == 5).all()


def test_elementwise_losses_propagate_nan(fast):
    pred, targets = to_backend(fast, np.array([0.5, np.nan, -2.0], np.float32),
                               np.array([1.0, 0.0, 0.0], np.float32))
    for op, extra in (("binary_cross_entropy", ()), ("mse", ()), ("huber", (1.0,))):
        losses, grad = fast.zeros(3, np.float32), fast.zeros(3, np.float32)
        value = getattr(fast, op)(pred, targets, *extra, spec.SUM, losses, grad)
        losses, grad = fast.to_host(losses), fast.to_host(grad)
        assert math.isnan(value), op
        np.testing.assert_array_equal(np.isnan(losses), [False, True, False], err_msg=op)
        np.testing.assert_array_equal(np.isnan(grad), [False, True, False], err_msg=op)


@pytest.mark.parametrize("fastmath", [False, True], ids=["plain", "in_a_fastmath_kernel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_fast_exp_within_a_few_ulp(dtype, fastmath):
    """The vectorisable exp behind the softmax kernels (kernels.cpu only) against np.exp,
    called from a plain loop and from one compiled with the kernels' fastmath flags."""
    numba = pytest.importorskip("numba")
    from kernels.cpu.jit import FASTMATH
    from kernels.cpu.vecmath import fast_exp

    @numba.njit(fastmath=set(FASTMATH) if fastmath else False)
    def exp_all(x, out):
        for i in range(x.size):
            out[i] = fast_exp(x[i])

    lo, hi = (-110.0, 90.0) if dtype == np.float32 else (-750.0, 712.0)
    x = np.concatenate([np.linspace(lo, hi, 400_001),
                        np.random.default_rng(0).standard_normal(10_000) * 5,
                        [0.0, -0.0, np.nan, np.inf, -np.inf]]).astype(dtype)
    got = np.empty_like(x)
    exp_all(x, got)
    with np.errstate(over="ignore"):
        expected = np.exp(x)
    finite = np.isfinite(expected)
    normal = finite & (expected >= np.finfo(dtype).tiny)
    ulps = np.abs(got[normal] - expected[normal]) / np.spacing(expected[normal])
    assert ulps.max() <= 3, ulps.max()  # measured: 1 (float64), 3 (float32, NumPy's own exp ~1)
    # Subnormal results within two subnormal steps; overflow, NaN and the infinities exact.
    subnormal = finite & ~normal
    subnormal_step = np.finfo(dtype).smallest_subnormal
    assert np.abs(got[subnormal] - expected[subnormal]).max() <= 2 * subnormal_step
    np.testing.assert_array_equal(got[~finite], expected[~finite])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_scalar_helpers_get_no_fastmath_from_their_callers(dtype):
    """numba compiles a function that sets no fastmath with its caller's flags; the scalar
    helpers set it off (kernels.cpu.jit.scalar), so that no reassociation can fold
    fast_exp's round-to-integer ``(y + S) - S`` into ``y`` inside a fastmath kernel."""
    numba = pytest.importorskip("numba")
    from kernels.cpu.jit import FASTMATH
    from kernels.cpu.vecmath import fast_exp

    @numba.njit(fastmath=set(FASTMATH))
    def exp_all(x, out):
        for i in range(x.size):
            out[i] = fast_exp(x[i])

    exp_all(np.zeros(3, dtype), np.zeros(3, dtype))
    ir = exp_all.inspect_llvm(exp_all.signatures[0])
    reassociated = [line for line in ir.splitlines() if re.search(r"= f(add|sub|mul) [a-z ]*\breassoc\b", line)]
    assert not reassociated, reassociated[:3]


def test_parallel_kernels(parallel_cpu, ref):
    """The parallel (prange) loss kernels against the reference; float32 only, as in
    test_kernels_dense.test_parallel_kernels (CPU-only, on host arrays)."""
    dtype = np.float32
    logits = logits_for((64, 10), dtype, seed=30)
    targets = class_targets(64, 10, seed=31, ignore_index=3, ignored=0.2)
    args = (targets, 0.1, 3, spec.MEAN)
    got = run_loss(parallel_cpu, "softmax_cross_entropy", logits, (64,), "both", *args)
    expected = run_loss(ref, "softmax_cross_entropy", logits, (64,), "both", *args)
    assert_loss_close(got, expected, dtype, "class targets")
    distribution = np.random.default_rng(32).dirichlet(np.ones(10), 64).astype(dtype)
    args = (distribution, 0.1, spec.NO_IGNORE, spec.SUM)
    got = run_loss(parallel_cpu, "softmax_cross_entropy", logits, (64,), "both", *args)
    expected = run_loss(ref, "softmax_cross_entropy", logits, (64,), "both", *args)
    assert_loss_close(got, expected, dtype, "dense targets")
    pred, targets = element_inputs("mse", (300, 70), dtype, seed=33)  # several blocks
    got = run_loss(parallel_cpu, "mse", pred, pred.shape, "both", targets, spec.MEAN)
    expected = run_loss(ref, "mse", pred, pred.shape, "both", targets, spec.MEAN)
    assert_loss_close(got, expected, dtype, "mse")
