"""kernels.reference dense layer, dropout hash and output functions, checked against the
formulas of kernels.spec / kernels.rng rather than against the reference itself.

Expected values come from finite differences, scalar ``math`` implementations of the
torch activation definitions, and a pure-Python implementation of the dropout hash
written from the docstring of kernels/rng.py.
"""
import math
import warnings

import numpy as np
import pytest

import kernels.reference as ref
from kernels import rng, spec
from finite_differences import central_diff

ALL_ACTS = list(range(12))
ACT_NAMES = ["identity", "relu", "leaky_relu", "elu", "selu", "gelu", "gelu_tanh", "silu",
             "softplus", "tanh", "sigmoid", "prelu"]
assert len(ACT_NAMES) == spec.PRELU + 1  # a new activation code must get a test here

# act_param per activation: deliberately not 1.0 (elu) or the common 0.01 (leaky) so that
# a backend ignoring act_param or using a hard-coded default is caught.
ACT_PARAM = {spec.LEAKY_RELU: 0.07, spec.ELU: 1.3}

# Central differences in float64 with EPS = 1e-6: truncation error ~ |f'''| EPS^2 / 6
# ~ 1e-12 and rounding error ~ |f| * 1e-16 / EPS ~ 1e-10 * |f| (|f| <= ~50 here), so
# 1e-6 relative plus 1e-7 absolute leaves a wide margin while any wrong derivative
# (wrong constant, wrong branch, missing mask) is off by orders of magnitude more.
FD_RTOL = 1e-6
FD_ATOL = 1e-7

# Value checks of hand-written scalar formulas against vectorised NumPy: both round
# differently (e.g. 1 + erf(x) versus erfc(-x) loses ~|x| 1e-16 absolute near the
# tails), so allow 1e-12 relative plus 1e-14 absolute.
VAL_RTOL = 1e-12
VAL_ATOL = 1e-14

# Distance every pre-activation keeps from the kink at 0 of the relu family (and of
# elu/selu's second derivative), far larger than the EPS * |W| shifts FD makes.
KINK_MARGIN = 1e-2


def assert_grad(analytic, numeric, what):
    np.testing.assert_allclose(analytic, numeric, rtol=FD_RTOL, atol=FD_ATOL, err_msg=what)


# ---------------------------------------------------------------- scalar formulas

SQRT2 = math.sqrt(2.0)


def act_scalar(act, z, a, s):
    """torch's definition of each activation at one point (s: the prelu slope)."""
    if act == spec.IDENTITY:
        return z
    if act == spec.RELU:
        return z if z > 0 else 0.0
    if act == spec.LEAKY_RELU:
        return z if z > 0 else a * z
    if act == spec.PRELU:
        return z if z > 0 else s * z
    if act == spec.ELU:
        return z if z > 0 else a * math.expm1(z)
    if act == spec.SELU:
        # torch.nn.SELU constants, typed in from the SELU paper / torch docs.
        alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
        return scale * (z if z > 0 else alpha * math.expm1(z))
    if act == spec.GELU:
        # x * Phi(x), Phi written with erfc to be independent of an erf-based version.
        return z * 0.5 * math.erfc(-z / SQRT2)
    if act == spec.GELU_TANH:
        return 0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))
    if act == spec.SILU:
        return z / (1.0 + math.exp(-z))
    if act == spec.SOFTPLUS:
        return math.log1p(math.exp(z))  # |z| stays small here, so no overflow
    if act == spec.TANH:
        return math.tanh(z)
    if act == spec.SIGMOID:
        return 1.0 / (1.0 + math.exp(-z))
    raise AssertionError(act)


def py_keep_bit(index, key, p):
    """The keep bit of one element, from the hash described in kernels/rng.py, in
    Python ints (constants typed from the docstring, not imported)."""
    m32 = 2 ** 32
    key_lo, key_hi = key % m32, (key >> 32) % m32
    x = (index * 0x9E3779B1 + key_lo) % m32
    x ^= key_hi
    x ^= x >> 16
    x = (x * 0x21F0AAAD) % m32
    x ^= x >> 15
    x = (x * 0x735A2D97) % m32
    x ^= x >> 15
    return x >= math.floor(p * m32)


def py_mask(shape, key, p):
    """m / (1 - p) with m the keep bit of element i * cols + j (float64)."""
    rows, cols = shape
    out = np.empty(shape)
    for i in range(rows):
        for j in range(cols):
            out[i, j] = (1.0 / (1.0 - p)) if (p == 0 or py_keep_bit(i * cols + j, key, p)) else 0.0
    return out


# ----------------------------------------------------------------- dense helpers

def make_layer(seed, n=6, fan_in=4, fan_out=5, margin=KINK_MARGIN):
    """Random X, W, b, prelu slopes, upstream R with every |Z| > margin.

    Resample (deterministically) instead of nudging values, so the data stay generic.
    """
    rs = np.random.default_rng(seed)
    while True:
        X = rs.normal(size=(n, fan_in))
        W = rs.normal(scale=0.7, size=(fan_in, fan_out))
        b = rs.normal(scale=0.5, size=fan_out)
        Z = X @ W + b  # computed here, not by the code under test
        if np.abs(Z).min() > margin:
            break
    # slopes of both signs and > 1 so a prelu using a single shared slope or |slope| fails
    slope = np.array([0.25, -0.1, 0.5, 1.7, 0.03])[:fan_out].copy()
    R = rs.normal(size=(n, fan_out))
    return X, W, b, slope, R


def forward(X, W, b, act, slope, p, key):
    Z = np.empty((X.shape[0], W.shape[1]))
    Y = np.empty_like(Z)
    ref.dense_forward(X, W, b, act, ACT_PARAM.get(act, 0.0), slope, p, key, Z, Y)
    return Z, Y


def backward(dY, X, W, Z, act, slope, p, key, want_dx=True):
    dZ = np.empty_like(Z)
    dW = np.empty_like(W)
    db = np.empty(W.shape[1])
    dslope = np.empty(W.shape[1]) if act == spec.PRELU else None
    dX = np.empty_like(X) if want_dx else None
    ref.dense_backward(dY, X, W, Z, act, ACT_PARAM.get(act, 0.0), slope, p, key,
                       dZ, dW, db, dslope, dX)
    return dZ, dW, db, dslope, dX


# ----------------------------------------------------------- forward values

@pytest.mark.parametrize("p", [0.0, 0.35])
@pytest.mark.parametrize("act", ALL_ACTS, ids=ACT_NAMES)
def test_dense_forward_values_match_scalar_formulas(act, p):
    X, W, b, slope, _ = make_layer(seed=100 + act)
    key = rng.dropout_key(11, 2, 0)
    Z, Y = forward(X, W, b, act, slope if act == spec.PRELU else None, p, key)
    n, fan_in = X.shape
    fan_out = W.shape[1]
    a = ACT_PARAM.get(act, 0.0)
    for i in range(n):
        for j in range(fan_out):
            z = math.fsum(X[i, k] * W[k, j] for k in range(fan_in)) + b[j]
            assert Z[i, j] == pytest.approx(z, rel=VAL_RTOL, abs=VAL_ATOL)
            kept = p == 0 or py_keep_bit(i * fan_out + j, key, p)
            expected = act_scalar(act, z, a, slope[j]) / (1.0 - p) if kept else 0.0
            assert Y[i, j] == pytest.approx(expected, rel=VAL_RTOL, abs=VAL_ATOL), (i, j)
            if not kept:
                assert Y[i, j] == 0.0  # dropped means exactly zero, not tiny


# ------------------------------------------------------- gradient checks

@pytest.mark.parametrize("p", [0.0, 0.4], ids=["no_dropout", "dropout0.4"])
@pytest.mark.parametrize("act", ALL_ACTS, ids=ACT_NAMES)
def test_dense_backward_matches_finite_differences(act, p):
    """dX, dW, db (and dslope) are the gradients of sum(Y * R) for a random R."""
    X, W, b, slope, R = make_layer(seed=200 + act)
    slope_arg = slope if act == spec.PRELU else None
    # A fixed key: the mask is a pure function of it, so f below is deterministic.
    key = rng.dropout_key(seed=5, step=17, layer=2)

    def f():
        _, Y = forward(X, W, b, act, slope_arg, p, key)
        return float(np.sum(Y * R))

    Z, _ = forward(X, W, b, act, slope_arg, p, key)
    dZ, dW, db, dslope, dX = backward(R, X, W, Z, act, slope_arg, p, key)

    assert_grad(dX, central_diff(f, X), "dX")
    assert_grad(dW, central_diff(f, W), "dW")
    assert_grad(db, central_diff(f, b), "db")
    if act == spec.PRELU:
        assert_grad(dslope, central_diff(f, slope), "dslope")
    else:
        assert dslope is None
    if p > 0:
        # the check above is only meaningful if the mask actually dropped something
        mask = py_mask(Z.shape, key, p)
        assert (mask == 0).any() and (mask != 0).any()


@pytest.mark.parametrize("p", [0.0, 0.4], ids=["no_dropout", "dropout0.4"])
@pytest.mark.parametrize("act", ALL_ACTS, ids=ACT_NAMES)
def test_dense_backward_dZ_is_gradient_wrt_Z(act, p):
    """With W = I and b = 0 the layer input is Z itself, so d sum(Y R)/dX is dZ."""
    rs = np.random.default_rng(300 + act)
    n = 5
    while True:
        Zin = rs.normal(size=(n, 5))
        if np.abs(Zin).min() > KINK_MARGIN:
            break
    W = np.eye(5)
    b = np.zeros(5)
    slope = np.array([0.25, -0.1, 0.5, 1.7, 0.03]) if act == spec.PRELU else None
    R = rs.normal(size=(n, 5))
    key = rng.dropout_key(seed=1, step=1, layer=1)

    def f():
        _, Y = forward(Zin, W, b, act, slope, p, key)
        return float(np.sum(Y * R))

    Z, _ = forward(Zin, W, b, act, slope, p, key)
    dZ, *_ = backward(R, Zin, W, Z, act, slope, p, key)
    assert_grad(dZ, central_diff(f, Zin), "dZ")


def test_subgradients_at_zero_follow_torch():
    """At Z == 0 exactly, torch's backward takes the non-positive branch: relu 0,
    leaky_relu its slope, prelu the unit's slope (and d/dslope = Z = 0), elu alpha,
    selu scale * alpha. X = 0 and b = 0 give Z == 0 exactly."""
    X = np.zeros((2, 3))
    W = np.random.default_rng(0).normal(size=(3, 4))
    b = np.zeros(4)
    slope = np.array([0.25, -0.1, 0.5, 1.7])
    dY = np.array([[1.0, -2.0, 0.5, 3.0], [0.3, 1.0, -1.0, 2.0]])
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    expected_slope = {spec.RELU: np.zeros(4), spec.LEAKY_RELU: np.full(4, ACT_PARAM[spec.LEAKY_RELU]),
                      spec.PRELU: slope, spec.ELU: np.full(4, ACT_PARAM[spec.ELU]),
                      spec.SELU: np.full(4, scale * alpha)}
    for act, d in expected_slope.items():
        s = slope if act == spec.PRELU else None
        Z, Y = forward(X, W, b, act, s, 0.0, 0)
        assert (Z == 0).all() and (Y == 0).all()
        dZ, _, db, dslope, _ = backward(dY, X, W, Z, act, s, 0.0, 0)
        np.testing.assert_allclose(dZ, dY * d, rtol=1e-15, atol=0, err_msg=ACT_NAMES[act])
        if act == spec.PRELU:
            np.testing.assert_array_equal(dslope, 0.0)


@pytest.mark.parametrize("act", ALL_ACTS, ids=ACT_NAMES)
def test_float32_agrees_with_float64(act):
    """The reference is also the float32 oracle: float32 inputs give the float64 results
    (verified above against the formulas) to float32 accuracy."""
    X, W, b, slope, R = make_layer(seed=400 + act, margin=0.05)
    s = slope if act == spec.PRELU else None
    p, key = 0.3, rng.dropout_key(4, 5, 6)
    a = ACT_PARAM.get(act, 0.0)
    out64 = [forward(X, W, b, act, s, p, key)]
    out64.append(backward(R, X, W, out64[0][0], act, s, p, key))
    c = lambda v: None if v is None else v.astype(np.float32)
    X32, W32, b32, s32, R32 = c(X), c(W), c(b), c(s), c(R)
    Z32, Y32 = np.empty((6, 5), np.float32), np.empty((6, 5), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref.dense_forward(X32, W32, b32, act, a, s32, p, key, Z32, Y32)
        grads32 = [np.empty((6, 5), np.float32), np.empty_like(W32), np.empty(5, np.float32),
                   np.empty(5, np.float32) if s is not None else None, np.empty_like(X32)]
        ref.dense_backward(R32, X32, W32, Z32, act, a, s32, p, key, *grads32)
    # float32 inputs are the float64 ones rounded (2^-24 relative), propagated through
    # a 4-term dot product and one activation: 1e-5 relative / 1e-5 absolute is ample
    for got, want in zip((Z32, Y32, *grads32), (*out64[0], *out64[1])):
        if want is None:
            continue
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_dense_backward_dX_none_is_skipped():
    X, W, b, _, R = make_layer(seed=7)
    Z, _ = forward(X, W, b, spec.TANH, None, 0.0, 0)
    dZ, dW, db, _, dX = backward(R, X, W, Z, spec.TANH, None, 0.0, 0, want_dx=False)
    assert dX is None
    # dW still correct without dX
    assert_grad(dW, central_diff(lambda: float(np.sum(forward(X, W, b, spec.TANH, None, 0.0, 0)[1] * R)), W), "dW")


@pytest.mark.parametrize("act", [spec.TANH, spec.PRELU], ids=["tanh", "prelu"])
def test_dense_backward_frozen_layer(act):
    """dW, db and dslope None (a frozen layer): dZ and dX are still the gradients of
    sum(Y * R), and a mix of None and arrays is a ValueError naming them."""
    X, W, b, slope, R = make_layer(seed=9)
    slope_arg = slope if act == spec.PRELU else None
    key = rng.dropout_key(seed=2, step=3, layer=1)
    Z, _ = forward(X, W, b, act, slope_arg, 0.4, key)
    dZ, dX = np.empty_like(Z), np.empty_like(X)
    ref.dense_backward(R, X, W, Z, act, 0.0, slope_arg, 0.4, key, dZ, None, None, None, dX)
    assert_grad(dX, central_diff(lambda: float(np.sum(forward(X, W, b, act, slope_arg, 0.4, key)[1] * R)), X),
                "dX")
    np.testing.assert_array_equal(dZ, backward(R, X, W, Z, act, slope_arg, 0.4, key)[0])
    dZ_only = np.empty_like(Z)
    ref.dense_backward(R, X, W, Z, act, 0.0, slope_arg, 0.4, key, dZ_only, None, None, None, None)
    np.testing.assert_array_equal(dZ_only, dZ)
    for dW, db, dslope, what in [(np.empty_like(W), None, None, "dW, db"), (None, np.empty(5), None, "dW, db"),
                                 (None, None, np.empty(5), "dslope")]:
        with pytest.raises(ValueError, match=what):
            ref.dense_backward(R, X, W, Z, act, 0.0, slope_arg, 0.4, key, dZ, dW, db, dslope, dX)


def test_dense_aliasing_allowed_by_spec():
    """Y may be Z in forward; dZ may be Z or dY in backward: same results as separate arrays."""
    X, W, b, slope, R = make_layer(seed=8)
    act, p, key = spec.PRELU, 0.3, rng.dropout_key(3, 4, 5)
    a = ACT_PARAM.get(act, 0.0)
    Z, Y = forward(X, W, b, act, slope, p, key)
    ZY = np.empty_like(Z)
    ref.dense_forward(X, W, b, act, a, slope, p, key, ZY, ZY)
    np.testing.assert_array_equal(ZY, Y)

    expected = backward(R, X, W, Z, act, slope, p, key)
    for alias in ("Z", "dY"):
        Zc, dYc = Z.copy(), R.copy()
        dZ = Zc if alias == "Z" else dYc
        dW, db, dslope, dX = np.empty_like(W), np.empty(5), np.empty(5), np.empty_like(X)
        ref.dense_backward(dYc, X, W, Zc, act, a, slope, p, key, dZ, dW, db, dslope, dX)
        for got, want in zip((dZ, dW, db, dslope, dX), expected):
            np.testing.assert_array_equal(got, want, err_msg=f"dZ aliased to {alias}")


def test_three_layer_mlp_chain_gradients():
    """Loss of a 4-6-5-3 MLP (dropout on layer 0, prelu on layer 1) with softmax CE:
    every dW, db and dslope from chaining dense_backward matches finite differences."""
    rs = np.random.default_rng(42)
    sizes = [4, 6, 5, 3]
    acts = [spec.TANH, spec.PRELU, spec.IDENTITY]
    drops = [0.25, 0.0, 0.0]
    n = 7
    X = rs.normal(size=(n, sizes[0]))
    y = np.array([0, 2, 1, 1, 0, 2, 2], dtype=np.int64)
    Ws = [rs.normal(scale=0.8, size=(sizes[k], sizes[k + 1])) for k in range(3)]
    bs = [rs.normal(scale=0.3, size=sizes[k + 1]) for k in range(3)]
    slopes = [None, np.array([0.2, -0.3, 0.6, 0.1, 1.2]), None]
    keys = [rng.dropout_key(seed=9, step=3, layer=k) for k in range(3)]
    smoothing = 0.1

    def run(with_grads):
        h = X
        cache = []
        for k in range(3):
            Z, Y = forward(h, Ws[k], bs[k], acts[k], slopes[k], drops[k], keys[k])
            cache.append((h, Z))
            h = Y
        grad = np.empty_like(h) if with_grads else None
        loss = ref.softmax_cross_entropy(h, y, smoothing, spec.NO_IGNORE, spec.MEAN, None, grad)
        if not with_grads:
            return loss, cache
        grads = [None] * 3
        dY = grad
        for k in reversed(range(3)):
            h_in, Z = cache[k]
            dZ, dW, db, dslope, dX = backward(dY, h_in, Ws[k], Z, acts[k], slopes[k], drops[k],
                                              keys[k], want_dx=k > 0)
            grads[k] = (dW, db, dslope)
            dY = dX
        return loss, cache, grads

    _, cache, grads = run(True)
    # the prelu layer must not sit on a kink for the check to hold
    assert np.abs(cache[1][1]).min() > 1e-4
    f = lambda: run(False)[0]
    for k in range(3):
        dW, db, dslope = grads[k]
        assert_grad(dW, central_diff(f, Ws[k]), f"dW{k}")
        assert_grad(db, central_diff(f, bs[k]), f"db{k}")
        if slopes[k] is not None:
            assert_grad(dslope, central_diff(f, slopes[k]), f"dslope{k}")


# ------------------------------------------------------------------ dropout

@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keep_rate_within_binomial_tolerance(p):
    n_rows, n_cols = 1000, 1000
    out = np.empty((n_rows, n_cols))
    ref.dropout_mask(p, rng.dropout_key(123, 4, 2), out)
    n = out.size
    kept = int(np.count_nonzero(out))
    sigma = math.sqrt(n * p * (1 - p))
    # 5 sigma: a false alarm has probability ~6e-7 for a truly Bernoulli(1-p) mask
    assert abs(kept - n * (1 - p)) < 5 * sigma, (kept, n * (1 - p), sigma)
    # kept entries are exactly 1/(1-p) in float64, dropped ones exactly 0
    values = np.unique(out)
    assert set(values.tolist()) == {0.0, 1.0 / (1.0 - p)}


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_mask_float32_scale(p):
    out = np.empty((50, 40), dtype=np.float32)
    ref.dropout_mask(p, rng.dropout_key(1, 2, 3), out)
    kept = out[out != 0]
    assert kept.size > 0
    # float32 keeps 1/(1-p) to within one rounding of float32 (2^-24 relative; 1.2e-7)
    np.testing.assert_allclose(kept, 1.0 / (1.0 - p), rtol=1.2e-7, atol=0)
    # and the same elements are kept as in float64
    out64 = np.empty((50, 40))
    ref.dropout_mask(p, rng.dropout_key(1, 2, 3), out64)
    np.testing.assert_array_equal(out != 0, out64 != 0)


def test_dropout_p0_is_all_ones():
    for dtype in (np.float32, np.float64):
        out = np.full((17, 9), -3.0, dtype=dtype)
        ref.dropout_mask(0.0, rng.dropout_key(99, 98, 97), out)
        assert (out == 1.0).all()


def test_different_keys_give_different_masks():
    p = 0.5
    shape = (100, 100)
    base_key = rng.dropout_key(0, 0, 0)
    other_keys = [rng.dropout_key(1, 0, 0), rng.dropout_key(0, 1, 0), rng.dropout_key(0, 0, 1),
                  base_key ^ (1 << 40),  # differs in key_hi only
                  base_key ^ 1]          # differs in key_lo only
    base = np.empty(shape)
    ref.dropout_mask(p, base_key, base)
    for key in other_keys:
        other = np.empty(shape)
        ref.dropout_mask(p, key, other)
        disagree = np.mean((base != 0) != (other != 0))
        # independent masks disagree on 2 p (1 - p) = 50% of elements; 0.4 is > 20 sigma away
        assert disagree > 0.4, (hex(key), disagree)


def test_dropout_key_differs_across_seed_step_layer():
    keys = {}
    for seed in range(4):
        for step in range(6):
            for layer in range(5):
                key = rng.dropout_key(seed, step, layer)
                assert 0 <= key < 2 ** 64
                keys[key] = (seed, step, layer)
    assert len(keys) == 4 * 6 * 5
    # not a trivially separable function: swapping seed and step changes the key
    assert rng.dropout_key(1, 2, 3) != rng.dropout_key(2, 1, 3)
    assert rng.dropout_key(1, 2, 3) != rng.dropout_key(1, 3, 2)
    # both 32-bit halves must vary, since the element hash consumes each
    his = {k >> 32 for k in keys}
    los = {k & 0xFFFFFFFF for k in keys}
    assert len(his) == len(keys) and len(los) == len(keys)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.77])
@pytest.mark.parametrize("key", [0, 0xDEADBEEF, 0xFFFFFFFF00000000, rng.dropout_key(2024, 7, 1)],
                         ids=["zero", "lo_only", "hi_only", "derived"])
def test_dropout_mask_matches_pure_python_hash(key, p):
    shape = (37, 23)  # odd shape: element index is i * 23 + j, not a power-of-two layout
    out = np.empty(shape)
    ref.dropout_mask(p, key, out)
    np.testing.assert_array_equal(out, py_mask(shape, key, p))


def test_keep_threshold_and_split_key_follow_docstring():
    for p in (0.0, 0.1, 0.5, 0.9, 0.999999):
        assert rng.keep_threshold(p) == math.floor(p * 2 ** 32)
    key = 0x0123456789ABCDEF
    assert rng.split_key(key) == (0x89ABCDEF, 0x01234567)


def test_dense_forward_uses_same_mask_as_dropout_mask():
    """dense_forward's mask is dropout_mask's: Y / act(Z) equals the scaled mask."""
    X, W, b, _, _ = make_layer(seed=11, n=9, fan_in=3, fan_out=7)
    p, key = 0.45, rng.dropout_key(8, 8, 8)
    Z, Y = forward(X, W, b, spec.IDENTITY, None, p, key)
    expected_mask = py_mask(Z.shape, key, p)
    np.testing.assert_allclose(Y, Z * expected_mask, rtol=VAL_RTOL, atol=0)
    m = np.empty_like(Z)
    ref.dropout_mask(p, key, m)
    np.testing.assert_array_equal(m, expected_mask)


# ------------------------------------------------------------ apply_output

def test_softmax_output_moderate_values():
    rs = np.random.default_rng(5)
    X = rs.uniform(-5, 5, size=(8, 6))
    out = np.empty_like(X)
    ref.apply_output(spec.OUTPUT_SOFTMAX, X, out)
    for i in range(X.shape[0]):
        denom = math.fsum(math.exp(v) for v in X[i])
        for k in range(X.shape[1]):
            assert out[i, k] == pytest.approx(math.exp(X[i, k]) / denom, rel=1e-13)
    # rows sum to 1 up to the rounding of 6 additions (a few 1e-16)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_output_huge_values_are_finite(dtype):
    X = np.array([[1e4, 0.0, -1e4],
                  [1e4, 1e4, 1e4],
                  [-1e4, -1e4 - 1.0, -1e4],
                  [1e4, 1e4 - 1.0, -1e4]], dtype=dtype)
    out = np.empty_like(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning means exp(1e4) was evaluated
        # exp underflowing to 0 is the right answer; overflow or 0/0 is not
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            ref.apply_output(spec.OUTPUT_SOFTMAX, X, out)
    assert np.isfinite(out).all()
    e1 = math.exp(-1.0)
    expected = np.array([[1.0, 0.0, 0.0],
                         [1 / 3, 1 / 3, 1 / 3],
                         [1 / (2 + e1), e1 / (2 + e1), 1 / (2 + e1)],
                         [1 / (1 + e1), e1 / (1 + e1), 0.0]])
    # float32 rounds each of these to 2^-24 relative; 1e-6 covers a few roundings
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_output_stable_and_correct(dtype):
    X = np.array([[-1e4, -30.0, -2.5, 0.0, 0.7, 30.0, 1e4]], dtype=dtype)
    out = np.empty_like(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref.apply_output(spec.OUTPUT_SIGMOID, X, out)
    assert np.isfinite(out).all()
    assert out[0, 0] == 0.0 or out[0, 0] < 1e-300  # e^-1e4 underflows to 0
    assert out[0, -1] == 1.0
    expected = [1.0 / (1.0 + math.exp(-float(x))) if x > -700 else 0.0 for x in X[0]]
    tol = 1e-6 if dtype == np.float32 else 1e-14  # float32 rounding, see above
    np.testing.assert_allclose(out[0], expected, rtol=tol, atol=1e-300)


def test_output_none_copies():
    X = np.arange(12.0).reshape(3, 4) - 5
    out = np.empty_like(X)
    ref.apply_output(spec.OUTPUT_NONE, X, out)
    np.testing.assert_array_equal(out, X)


def test_matmul_sums_products_by_hand():
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]])
    out = np.empty((2, 2))
    ref.matmul(a, b, out)
    # row 0: (1 + 6, 2 - 3); row 1: (4 + 12, 5 - 6)
    np.testing.assert_array_equal(out, [[7.0, -1.0], [16.0, -1.0]])
