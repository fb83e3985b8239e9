"""The loss math of kernels/cuda/loss_math.cuh, built as host C++ (tests/cuda_host.py),
against kernels.reference: the elementwise losses at their edges, the online softmax
statistics and their merges as a warp (32 lanes) and a block (512 lanes) do them, the
cross-entropy rows of losses.cu, and the first-maximum argmax of decisions.cu.

This checks the formulas and their order of operations, not the device's exp and log
(CUDA's expf may differ from glibc's by an ulp or two): the device kernels themselves run
only where a GPU is, in the backends' shared tests.
"""
import numpy as np
import pytest

from conftest import TOLERANCES
from cuda_host import build, call
from kernels import reference, spec

DTYPES = [np.float32, np.float64]
SUFFIX = {np.float32: "f32", np.float64: "f64"}
GROUPS = {"warp": 32, "block": 512}  # lanes of WarpRows and of BlockRows at WIDE_ROW_THREADS


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return build("cuda_host_losses.cpp", tmp_path_factory)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return request.param


def ulps(got, expected, magnitude, dtype):
    """|got - expected| in units of the dtype's spacing at ``magnitude``, the largest term
    of the formula (0 where both are the same non-finite value)."""
    got, expected = got.astype(np.float64), expected.astype(np.float64)
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    spacing = np.spacing(np.abs(magnitude).astype(dtype)).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(same, 0.0, np.abs(got - expected) / spacing)


# ------------------------------------------------------------------ elementwise losses
def edge_inputs(dtype, delta):
    """Logits across the range (exp(-|x|) from 1 down to underflow, |x| where float32
    x t loses the digits of t), targets 0, 1 and in between, and differences on both
    sides of +-delta and at it."""
    big = 700.0 if dtype == np.float64 else 88.0
    xs = np.array([-1e4, -big, -100.0, -30.0, -20.0, -1.0, -1e-3, -0.0, 0.0, 1e-3, 1.0, 20.0,
                   30.0, 100.0, big, 1e4, 1e30, np.inf, -np.inf, np.nan], dtype)
    ts = np.array([0.0, 1.0, 0.3, 0.99999, 1e-7], dtype)
    x, t = (a.ravel() for a in np.meshgrid(xs, ts))
    d = dtype(delta)
    around = np.array([d, np.nextafter(d, dtype(0)), np.nextafter(d, dtype(np.inf)), 2 * d, d / 2],
                      dtype)
    shifts = np.concatenate([around, -around])  # with t = 0, d = x exactly
    x = np.concatenate([x, shifts, np.random.default_rng(0).standard_normal(500).astype(dtype) * 3])
    t = np.concatenate([t, np.zeros(shifts.size, dtype), np.random.default_rng(1).random(500).astype(dtype)])
    return x, t


LOSSES = {"bce": (reference.binary_cross_entropy, ()), "mse": (reference.mse, ()),
          "huber": (reference.huber, (1.0,)), "huber_small_delta": (reference.huber, (0.3,))}


@pytest.mark.parametrize("name", LOSSES)
def test_elementwise_losses(lib, dtype, name):
    op, extra = LOSSES[name]
    delta = extra[0] if extra else 1.0
    x, t = edge_inputs(dtype, delta)
    loss, grad = np.empty_like(x), np.empty_like(x)
    call(lib, f"{name.split('_')[0]}_{SUFFIX[dtype]}", x, t, x.size, float(dtype(delta)), loss, grad)
    ref_loss, ref_grad = np.empty_like(x), np.empty_like(x)
    with np.errstate(all="ignore"):
        op(x, t, *extra, spec.NONE, ref_loss, ref_grad)
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(ref_loss))
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(ref_grad))
    if name == "bce":  # terms that cancel: max(x, 0), x t and log1p(e); sigmoid(x) and t
        with np.errstate(all="ignore"):
            loss_terms = np.maximum.reduce([np.maximum(x, 0), np.abs(x * t), np.log1p(np.exp(-np.abs(x)))])
        grad_terms = np.maximum(np.abs(ref_grad + t), np.abs(t))
    else:
        loss_terms, grad_terms = ref_loss, ref_grad
    # The same operations in the same order: equal up to the C library's exp and log1p
    # against NumPy's, which are an ulp apart at times (NumPy's float32 ones are not
    # correctly rounded), and an exp an ulp off moves log1p's result too. Measured: 4
    # ulps of the loss's largest term at most, 2 of the gradient's.
    assert ulps(loss, ref_loss, loss_terms, dtype).max() <= 4, name
    assert ulps(grad, ref_grad, grad_terms, dtype).max() <= 2, name


def test_huber_switches_at_delta(lib, dtype):
    """Either side of |d| = delta and at it, bit for bit as NumPy evaluates torch's formula
    (d^2 / 2 below delta, delta (|d| - delta / 2) from it on) and its clipped gradient."""
    delta = dtype(0.3)
    d = np.array([np.nextafter(delta, dtype(0)), delta, np.nextafter(delta, dtype(1))], dtype)
    x = np.concatenate([d, -d])
    t = np.zeros_like(x)
    loss, grad = np.empty_like(x), np.empty_like(x)
    call(lib, f"huber_{SUFFIX[dtype]}", x, t, x.size, float(delta), loss, grad)
    a = np.abs(x)
    half = dtype(0.5)
    expected = np.where(a < delta, half * x * x, delta * (a - half * delta))
    np.testing.assert_array_equal(loss, expected)
    np.testing.assert_array_equal(grad, np.clip(x, -delta, delta))


def test_bce_large_logits_keep_their_digits(lib, dtype):
    """At |x| = 100 the loss is x (t = 0) or 0 (t = 1) up to exp(-100), never log(0) or inf."""
    x = np.array([100.0, -100.0, 100.0, -100.0], dtype)
    t = np.array([0.0, 1.0, 1.0, 0.0], dtype)
    loss, grad = np.empty_like(x), np.empty_like(x)
    call(lib, f"bce_{SUFFIX[dtype]}", x, t, x.size, 0.0, loss, grad)
    info = np.finfo(dtype)
    expected = np.array([100.0, 100.0, 0.0, 0.0]) + np.log1p(np.exp(-100.0))  # subnormal in float32
    np.testing.assert_allclose(loss, expected, rtol=info.eps, atol=info.smallest_subnormal)
    np.testing.assert_allclose(grad, [1.0, -1.0, 0.0, 0.0], rtol=0, atol=info.eps)


# ---------------------------------------------------------------------- softmax rows
def softmax_rows(dtype):
    """Rows of many widths (fewer than 32 columns leaves lanes empty), extreme spreads, -inf
    entries, rows that make the reference NaN (a NaN, a +inf, all -inf) and ties."""
    g = np.random.default_rng(2)
    rows = [g.standard_normal(k) * 3 for k in (1, 2, 5, 31, 32, 33, 100, 1000, 1025, 2000)]
    rows += [np.array([0.0, -50.0, -90.0, -110.0, -800.0, 30.0]), np.full(40, 7.0),
             np.array([1e-3, 0.0, -1e-3, 2e-3, 0.0, 0.0]), np.linspace(-3000, 80, 77),
             np.array([-np.inf, 1.0, -np.inf, 2.0]), np.array([-np.inf, 1.0, 2.0]),
             np.r_[np.full(64, -np.inf), 1.0],
             np.array([np.nan, 1.0, 2.0]),
             np.array([1.0, np.inf, 2.0]), np.full(3, -np.inf), np.full(64, -np.inf),
             np.array([np.inf, np.inf])]
    return [r.astype(dtype) for r in rows]


@pytest.mark.parametrize("group", GROUPS)
def test_log_sum_exp(lib, dtype, group):
    for row in softmax_rows(dtype):
        out, disagree = np.empty(1), np.zeros(1, np.int64)
        call(lib, f"log_sum_exp_{SUFFIX[dtype]}", row, 1, row.size, GROUPS[group], out, disagree)
        x = row.astype(np.float64)
        with np.errstate(invalid="ignore"):
            m = x.max()
            expected = m + np.log(np.exp(x - m).sum())
        assert disagree[0] == 0
        # Each term exp(x - m) is rounded in the dtype (twice where the running maximum
        # moved): log s is then within a few of the dtype's rounding of 1.
        atol = 1e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(out[0], expected, rtol=0, atol=atol, err_msg=f"{row.size} columns, {row[:6]}")


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("ignore_index", [spec.NO_IGNORE, 2])
def test_cross_entropy_classes(lib, dtype, group, smoothing, ignore_index):
    g = np.random.default_rng(3)
    for k in (1, 5, 33, 1000, 1500):
        n = 9
        logits = (g.standard_normal((n, k)) * 3).astype(dtype)
        targets = g.integers(0, k, n).astype(np.int64)
        if ignore_index != spec.NO_IGNORE:
            targets[::3] = ignore_index
        check_classes(lib, dtype, GROUPS[group], logits, targets, smoothing, ignore_index)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_classes_extreme_rows(lib, dtype, smoothing):
    """Underflowing exponentials, -inf logits (the reference's loss is inf at the target
    class, NaN at another without smoothing: its 0 log 0), and rows whose NaN or inf makes
    every output NaN."""
    rows = [r for r in softmax_rows(dtype) if r.size >= 3]
    for row in rows:
        for y in (0, row.size - 1):
            check_classes(lib, dtype, 32, row.reshape(1, -1), np.array([y]), smoothing, spec.NO_IGNORE)


def check_classes(lib, dtype, lanes, logits, targets, smoothing, ignore_index):
    n, k = logits.shape
    keep, off = dtype(1.0 - smoothing), dtype(smoothing / k)
    kept = int((targets != ignore_index).sum())
    scale = dtype(1.0 / kept) if kept else dtype(0)
    losses, grad = np.empty(n, dtype), np.empty((n, k), dtype)
    disagree = np.zeros(1, np.int64)
    call(lib, f"cross_entropy_classes_{SUFFIX[dtype]}", logits, targets, n, k, ignore_index,
         float(keep + off), float(off), float(scale), lanes, losses, grad, disagree)
    ref_losses, ref_grad = np.empty(n, dtype), np.empty((n, k), dtype)
    with np.errstate(all="ignore"):
        reference.softmax_cross_entropy(logits, targets, smoothing, ignore_index, spec.MEAN,
                                        ref_losses, ref_grad)
    ref_grad[targets == ignore_index] = 0  # 0 * NaN there in the reference; the kernels write 0
    what = f"k={k}, lanes={lanes}, smoothing={smoothing}, row {logits[0, :6]}"
    assert disagree[0] == 0
    np.testing.assert_allclose(losses, ref_losses, err_msg=what, **TOLERANCES[dtype])
    np.testing.assert_allclose(grad, ref_grad, err_msg=what, **TOLERANCES[dtype])


def test_cross_entropy_classes_bad_and_ignored_rows(lib, dtype):
    """A target outside [0, K) gives NaN (the host raises when it reads the total); an
    ignored row 0, whatever its logits."""
    logits = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 1.0], [1.0, 2.0, 3.0]], dtype)
    targets = np.array([3, -100, -1])
    losses, grad = np.empty(3, dtype), np.empty((3, 3), dtype)
    disagree = np.zeros(1, np.int64)
    call(lib, f"cross_entropy_classes_{SUFFIX[dtype]}", logits, targets, 3, 3, -100, 1.0, 0.0, 1.0, 32,
         losses, grad, disagree)
    assert np.isnan(losses[[0, 2]]).all() and np.isnan(grad[[0, 2]]).all()
    assert losses[1] == 0 and (grad[1] == 0).all()


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_dense(lib, dtype, group, smoothing):
    g = np.random.default_rng(4)
    for k in (1, 5, 33, 1000, 1500):
        n = 7
        logits = (g.standard_normal((n, k)) * 3).astype(dtype)
        targets = g.random((n, k)).astype(dtype)
        targets[::2] /= targets[::2].sum(axis=1, keepdims=True)  # distributions and not
        keep, off = dtype(1.0 - smoothing), dtype(smoothing / k)
        losses, grad = np.empty(n, dtype), np.empty((n, k), dtype)
        disagree = np.zeros(1, np.int64)
        call(lib, f"cross_entropy_dense_{SUFFIX[dtype]}", logits, targets, n, k, float(keep), float(off),
             float(dtype(1.0 / n)), GROUPS[group], losses, grad, disagree)
        ref_losses, ref_grad = np.empty(n, dtype), np.empty((n, k), dtype)
        reference.softmax_cross_entropy(logits, targets, smoothing, spec.NO_IGNORE, spec.MEAN,
                                        ref_losses, ref_grad)
        assert disagree[0] == 0
        np.testing.assert_allclose(losses, ref_losses, err_msg=f"k={k}", **TOLERANCES[dtype])
        np.testing.assert_allclose(grad, ref_grad, err_msg=f"k={k}", **TOLERANCES[dtype])


# ---------------------------------------------------------------------------- argmax
@pytest.mark.parametrize("group", GROUPS)
def test_argmax_first_maximum(lib, dtype, group):
    g = np.random.default_rng(5)
    rows = [g.integers(0, 3, k).astype(dtype) for k in (1, 2, 31, 33, 64, 1000, 1025)]  # ties
    rows += [np.array([1.0, np.nan, 3.0, np.nan]), np.array([np.nan] * 5), np.full(70, -np.inf),
             np.array([-np.inf, np.inf, 2.0, np.inf]), np.r_[np.zeros(600), np.nan, np.zeros(50), np.nan]]
    for row in rows:
        row = row.astype(dtype)
        out, disagree = np.empty(1, np.int64), np.zeros(1, np.int64)
        call(lib, f"argmax_rows_{SUFFIX[dtype]}", row, 1, row.size, GROUPS[group], out, disagree)
        assert disagree[0] == 0
        assert out[0] == np.argmax(row), row[:8]
