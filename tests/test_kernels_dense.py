"""Dense forward/backward, dropout masks and output functions of the fast backends,
op by op against kernels.reference.

Each fast backend gets its inputs as its own arrays (``fast.to_device``, views taken on
those), its outputs from ``fast.zeros``/``fast.empty``, and its results are compared on
the host (``fast.to_host``), so the same tests run on kernels.cpu and kernels.cuda.
"""
import numpy as np
import pytest

import kernels.reference as reference
from conftest import TOLERANCES
from kernels import rng, spec

ACTIVATIONS = list(range(12))
ACT_PARAM = 0.2  # the leaky slope / the elu alpha
# (batch, fan_in, fan_out): a single element, odd sizes, batch 1, a row of 1000.
SHAPES = [(1, 1, 1), (7, 13, 5), (33, 5, 17), (1, 1000, 3), (64, 24, 130)]
KEYS = [0, rng.dropout_key(0, 1, 0), rng.dropout_key(1234, 77, 3), 2**64 - 1]


def assert_close(actual, desired, dtype, what):
    np.testing.assert_allclose(actual, desired, err_msg=what, **TOLERANCES[dtype])


def assert_sum_close(actual, desired, terms, dtype, what, atol_scale=1.0):
    """Compare sums of products (GEMM entries, column sums) at TOLERANCES of their terms.

    Tolerance differs from TOLERANCES on purpose: an entry of dW = X.T @ dZ adds N terms,
    and the reference's own float32 dZ is off by up to 1.2e-6 absolute where its formula
    cancels (gelu_tanh's 1 + tanh near -1; we measured ours at half that), so the sum
    inherits about sqrt(N) times that, while cancellation between the terms can make the
    entry itself small. Each entry is therefore allowed rtol times the sum of the
    magnitudes of its terms (``terms``, same shape) on top of TOLERANCES, whose absolute
    part ``atol_scale`` multiplies (elementwise) where the compared values are a factor
    times a quantity known to that absolute tolerance.
    """
    tol = TOLERANCES[dtype]
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    bound = tol["atol"] * atol_scale + tol["rtol"] * (np.abs(desired) + terms)
    bad = ~(np.abs(actual - desired) <= bound)
    if bad.any():
        where = np.argwhere(bad)[:10]
        rows = "\n".join(f"  {tuple(i)}: {actual[tuple(i)]!r} (actual) {desired[tuple(i)]!r} "
                         f"(desired) bound {bound[tuple(i)]:.3g}" for i in where)
        raise AssertionError(f"{what}: {bad.sum()} of {bad.size} elements differ\n{rows}")


def layer_inputs(shape, dtype, layout, seed=0, backend=reference):
    """X, W, b, prelu slope and an upstream gradient for a layer of ``shape``, as arrays
    of ``backend`` (NumPy arrays by default); every backend gets the same values.

    ``layout`` "strided" makes X a column slice of a wider array (rows not adjacent),
    "transposed" a transposed view of a C array (Fortran order); both views are taken
    on the backend's own array, so they reach its kernels (and BLAS) as views.
    """
    n, fan_in, fan_out = shape
    g = np.random.default_rng(seed)
    if layout == "strided":
        X = backend.to_device(g.standard_normal((n, fan_in + 9)), dtype)[:, 4:4 + fan_in]
    elif layout == "transposed":
        X = backend.to_device(g.standard_normal((fan_in, n)), dtype).T
    else:
        X = backend.to_device(g.standard_normal((n, fan_in)), dtype)
    W = backend.to_device(g.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in), dtype)
    b = backend.to_device(g.standard_normal(fan_out), dtype)
    slope = backend.to_device(g.uniform(0.05, 0.5, fan_out), dtype)
    dY = backend.to_device(g.standard_normal((n, fan_out)), dtype)
    return X, W, b, slope, dY


def backend_copy(backend, array):
    """A C-contiguous copy of ``array`` made by ``backend`` (its arrays or host arrays)."""
    copy = backend.empty(array.shape, array.dtype)
    backend.copy_into(copy, array)
    return copy


def on_host(backend, outputs):
    """``outputs`` (a dict of backend arrays or None) as NumPy arrays."""
    return {name: None if a is None else backend.to_host(a) for name, a in outputs.items()}


def run_forward(backend, X, W, b, act, slope, p, key, in_place):
    n, fan_out = X.shape[0], W.shape[1]
    Z = backend.zeros((n, fan_out), X.dtype)
    Y = Z if in_place else backend.zeros((n, fan_out), X.dtype)
    backend.dense_forward(X, W, b, act, ACT_PARAM, slope if act == spec.PRELU else None, p, key,
                          Z, Y)
    return Z, Y


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_dense_forward(fast, ref, dtype, act, shape):
    X, W, b, slope, _ = layer_inputs(shape, dtype, "contiguous")
    Xf, Wf, bf, slope_f, _ = layer_inputs(shape, dtype, "contiguous", backend=fast)
    for p, key in [(0.0, 0), (0.3, KEYS[1])]:
        Zf, Yf = map(fast.to_host, run_forward(fast, Xf, Wf, bf, act, slope_f, p, key,
                                               in_place=False))
        Zr, Yr = run_forward(ref, X, W, b, act, slope, p, key, in_place=False)
        assert_close(Zf, Zr, dtype, f"Z, p={p}")
        assert_close(Yf, Yr, dtype, f"Y, p={p}")
        # The same elements dropped, not merely close values.
        mask = ref.zeros(Yr.shape, dtype)
        ref.dropout_mask(p, key, mask)
        assert (Yf[mask == 0] == 0).all()
        assert (Yf[(mask != 0) & (np.abs(Yr) > 1e-3)] != 0).all()


@pytest.mark.parametrize("layout", ["contiguous", "strided", "transposed"])
@pytest.mark.parametrize("shape", SHAPES + [(256, 1024, 512)], ids=str)
def test_matmul(fast, ref, dtype, shape, layout):
    """The GEMM a benchmark's floor is timed on, small and past the numba backend's
    large-GEMM threshold (where MKL may take over), against the reference's np.matmul."""
    X, W, _, _, _ = layer_inputs(shape, dtype, layout)
    Xf, Wf, _, _, _ = layer_inputs(shape, dtype, layout, backend=fast)
    out, out_f = ref.zeros((shape[0], shape[2]), dtype), fast.zeros((shape[0], shape[2]), dtype)
    ref.matmul(X, W, out)
    fast.matmul(Xf, Wf, out_f)
    assert_sum_close(fast.to_host(out_f), out, np.abs(X) @ np.abs(W), dtype, "a @ b")


@pytest.mark.parametrize("act", [spec.IDENTITY, spec.RELU, spec.PRELU])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "transposed"])
def test_dense_forward_in_place_and_views(fast, ref, dtype, act, layout):
    X, W, b, slope, _ = layer_inputs((33, 21, 19), dtype, layout, seed=1)
    Xf, Wf, bf, slope_f, _ = layer_inputs((33, 21, 19), dtype, layout, seed=1, backend=fast)
    for p in (0.0, 0.5):
        _, Yf = run_forward(fast, Xf, Wf, bf, act, slope_f, p, KEYS[2], in_place=True)
        _, Yr = run_forward(ref, X, W, b, act, slope, p, KEYS[2], in_place=False)
        assert_close(fast.to_host(Yf), Yr, dtype, f"Y written over Z, p={p}")


def engine_alias(act):
    """What engine.model passes as dZ: dY for a linear layer, Z (overwritten) otherwise."""
    return "dY" if act == spec.IDENTITY else "Z"


def run_backward(backend, dY, X, W, Z, act, slope, p, key, alias, want_dX=True):
    """dZ, dW, db, dslope, dX as arrays of ``backend``; ``alias`` "Z" or "dY" makes dZ
    that array (copies given), "separate" an array of its own."""
    dY, Z = backend_copy(backend, dY), backend_copy(backend, Z)
    n, fan_in, fan_out = X.shape[0], X.shape[1], W.shape[1]
    dZ = {"Z": Z, "dY": dY}.get(alias)
    if alias == "separate":
        dZ = backend.zeros((n, fan_out), X.dtype)
    dW = backend.zeros((fan_in, fan_out), X.dtype)
    db = backend.zeros((fan_out,), X.dtype)
    dslope = backend.zeros((fan_out,), X.dtype) if act == spec.PRELU else None
    dX = backend.zeros((n, fan_in), X.dtype) if want_dX else None
    backend.dense_backward(dY, X, W, Z, act, ACT_PARAM, slope if act == spec.PRELU else None, p,
                           key, dZ, dW, db, dslope, dX)
    return dict(dZ=dZ, dW=dW, db=db, dslope=dslope, dX=dX)


def assert_backward_close(fast_out, ref_out, dY, X, W, Z, p, dtype, context):
    """dZ elementwise; the sums over rows (db, dslope, dW, dX) by their terms."""
    for name in ("dZ", "dX", "dslope"):
        assert (fast_out[name] is None) == (ref_out[name] is None), name
    # dZ = dY / (1 - p) * act'(Z): act'(Z) is known to TOLERANCES' absolute part (the
    # reference's float32 gelu_tanh cancels in 1 + tanh, 1.5e-6 off), and the upstream
    # factor multiplies that error (measured: 2.05e-6 apart at |dY| / (1 - p) = 3.8).
    upstream = np.maximum(1.0, np.abs(dY.astype(np.float64)) / (1 - p))
    assert_sum_close(fast_out["dZ"], ref_out["dZ"], 0.0, dtype, f"dZ, {context}", atol_scale=upstream)
    dZ = np.abs(ref_out["dZ"].astype(np.float64))
    assert_sum_close(fast_out["db"], ref_out["db"], dZ.sum(axis=0), dtype, f"db, {context}")
    assert_sum_close(fast_out["dW"], ref_out["dW"], np.abs(X.T) @ dZ, dtype, f"dW, {context}")
    if ref_out["dX"] is not None:
        assert_sum_close(fast_out["dX"], ref_out["dX"], dZ @ np.abs(W.T), dtype, f"dX, {context}")
    if ref_out["dslope"] is not None:
        terms = (np.abs(dY.astype(np.float64)) / (1 - p) * np.abs(np.minimum(Z, 0))).sum(axis=0)
        assert_sum_close(fast_out["dslope"], ref_out["dslope"], terms, dtype, f"dslope, {context}")


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_dense_backward(fast, ref, dtype, act, shape):
    X, W, b, slope, dY = layer_inputs(shape, dtype, "contiguous", seed=2)
    Xf, Wf, _, slope_f, dYf = layer_inputs(shape, dtype, "contiguous", seed=2, backend=fast)
    Z = np.random.default_rng(3).standard_normal(dY.shape).astype(dtype) * 2
    Zf = fast.to_device(Z, dtype)
    for p, key in [(0.0, 0), (0.3, KEYS[3])]:
        expected = run_backward(ref, dY, X, W, Z, act, slope, p, key, alias="separate")
        got = run_backward(fast, dYf, Xf, Wf, Zf, act, slope_f, p, key, alias=engine_alias(act))
        assert_backward_close(on_host(fast, got), expected, dY, X, W, Z, p, dtype, f"p={p}")


@pytest.mark.parametrize("act", [spec.IDENTITY, spec.RELU, spec.PRELU])
@pytest.mark.parametrize("alias", ["separate", "Z", "dY"])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "transposed"])
def test_dense_backward_aliases_and_views(fast, ref, dtype, act, alias, layout):
    X, W, b, slope, dY = layer_inputs((40, 17, 150), dtype, layout, seed=4)
    Xf, Wf, _, slope_f, dYf = layer_inputs((40, 17, 150), dtype, layout, seed=4, backend=fast)
    Z = np.random.default_rng(5).standard_normal(dY.shape).astype(dtype)
    Zf = fast.to_device(Z, dtype)
    for p in (0.0, 0.25):
        expected = run_backward(ref, dY, X, W, Z, act, slope, p, KEYS[2], alias="separate")
        got = run_backward(fast, dYf, Xf, Wf, Zf, act, slope_f, p, KEYS[2], alias=alias,
                           want_dX=False)
        expected["dX"] = None
        assert_backward_close(on_host(fast, got), expected, dY, X, W, Z, p, dtype,
                              f"dZ is {alias}, p={p}")


def run_frozen_backward(backend, dY, X, W, Z, act, slope, p, key, alias, want_dX):
    """dZ and dX (or None) of a frozen layer's backward (dW, db, dslope None) on ``backend``,
    as host arrays; ``alias`` as in run_backward."""
    dY, Z = backend_copy(backend, dY), backend_copy(backend, Z)
    dZ = {"Z": Z, "dY": dY}.get(alias)
    if alias == "separate":
        dZ = backend.zeros(dY.shape, X.dtype)
    dX = backend.zeros(X.shape, X.dtype) if want_dX else None
    backend.dense_backward(dY, X, W, Z, act, ACT_PARAM, slope if act == spec.PRELU else None, p,
                           key, dZ, None, None, None, dX)
    return on_host(backend, dict(dZ=dZ, dX=dX))


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_dense_backward_frozen(fast, ref, dtype, act, shape):
    """dW, db and dslope None (a frozen layer): dZ and dX as the full backward's, nothing
    else computed; with and without dX, dZ aliased as the engine aliases it."""
    X, W, b, slope, dY = layer_inputs(shape, dtype, "contiguous", seed=12)
    Xf, Wf, _, slope_f, dYf = layer_inputs(shape, dtype, "contiguous", seed=12, backend=fast)
    Z = np.random.default_rng(13).standard_normal(dY.shape).astype(dtype) * 2
    Zf = fast.to_device(Z, dtype)
    for p, key in [(0.0, 0), (0.3, KEYS[2])]:
        full = run_backward(ref, dY, X, W, Z, act, slope, p, key, alias="separate")
        for want_dX in (True, False):
            expected = run_frozen_backward(ref, dY, X, W, Z, act, slope, p, key, "separate", want_dX)
            # The reference's frozen backward is its full one less dW, db and dslope.
            np.testing.assert_array_equal(expected["dZ"], full["dZ"])
            if want_dX:
                np.testing.assert_array_equal(expected["dX"], full["dX"])
            got = run_frozen_backward(fast, dYf, Xf, Wf, Zf, act, slope_f, p, key, engine_alias(act),
                                      want_dX)
            assert (got["dX"] is None) == (not want_dX)
            upstream = np.maximum(1.0, np.abs(dY.astype(np.float64)) / (1 - p))
            context = f"frozen, p={p}, dX {'wanted' if want_dX else 'None'}"
            assert_sum_close(got["dZ"], expected["dZ"], 0.0, dtype, f"dZ, {context}", atol_scale=upstream)
            if want_dX:
                assert_sum_close(got["dX"], expected["dX"], np.abs(expected["dZ"]) @ np.abs(W.T), dtype,
                                 f"dX, {context}")


@pytest.mark.parametrize("act", [spec.IDENTITY, spec.PRELU])
@pytest.mark.parametrize("alias", ["separate", "Z", "dY"])
@pytest.mark.parametrize("layout", ["strided", "transposed"])
def test_dense_backward_frozen_aliases_and_views(fast, ref, dtype, act, alias, layout):
    """A frozen layer's backward on views (X strided or transposed: the wrapper's GEMM path
    on the CPU) and with every aliasing of dZ."""
    X, W, b, slope, dY = layer_inputs((40, 17, 150), dtype, layout, seed=14)
    Xf, Wf, _, slope_f, dYf = layer_inputs((40, 17, 150), dtype, layout, seed=14, backend=fast)
    Z = np.random.default_rng(15).standard_normal(dY.shape).astype(dtype)
    Zf = fast.to_device(Z, dtype)
    for p in (0.0, 0.25):
        expected = run_frozen_backward(ref, dY, X, W, Z, act, slope, p, KEYS[1], "separate", True)
        got = run_frozen_backward(fast, dYf, Xf, Wf, Zf, act, slope_f, p, KEYS[1], alias, True)
        upstream = np.maximum(1.0, np.abs(dY.astype(np.float64)) / (1 - p))
        assert_sum_close(got["dZ"], expected["dZ"], 0.0, dtype, f"dZ is {alias}, p={p}", atol_scale=upstream)
        assert_sum_close(got["dX"], expected["dX"], np.abs(expected["dZ"]) @ np.abs(W.T), dtype,
                         f"dX, dZ is {alias}, p={p}")


def test_dense_backward_frozen_needs_dW_db_dslope_all_none(fast):
    X, W, _, slope, dY = layer_inputs((4, 3, 5), np.float32, "contiguous", backend=fast)
    Z = backend_copy(fast, dY)
    dZ, dW = fast.zeros(dY.shape, np.float32), fast.zeros(W.shape, np.float32)
    db, dslope = fast.zeros((5,), np.float32), fast.zeros((5,), np.float32)
    for args, message in [((dW, None, None), "dW, db"), ((None, db, None), "dW, db"),
                          ((None, None, dslope), "dslope")]:
        with pytest.raises(ValueError, match=message):
            fast.dense_backward(dY, X, W, Z, spec.PRELU, 0.0, slope, 0.0, 0, dZ, *args, None)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_backward_propagates_non_finite(fast, ref):
    X, W, b, slope, dY = layer_inputs((4, 3, 5), np.float32, "contiguous")
    Z = np.ones_like(dY)
    dY[1, 2] = np.nan
    dY[2, 3] = np.inf
    device = [fast.to_device(a, np.float32) for a in (dY, X, W, Z)]
    for act in (spec.RELU, spec.TANH):
        got = on_host(fast, run_backward(fast, *device, act, fast.to_device(slope, np.float32),
                                         0.0, 0, alias=engine_alias(act)))
        expected = run_backward(ref, dY, X, W, Z, act, slope, 0.0, 0, alias="separate")
        for name in ("dZ", "db", "dW", "dX"):
            np.testing.assert_array_equal(np.isfinite(got[name]), np.isfinite(expected[name]),
                                          err_msg=name)
        assert not np.isfinite(got["db"][2:4]).any()


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (1, 1000), (33, 5), (256, 300), (3, 4, 5)],
                         ids=str)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_dropout_mask_bit_identical(fast, ref, dtype, shape, p):
    for key in KEYS:
        got = fast.zeros(shape, dtype)
        expected = ref.zeros(shape, dtype)
        fast.dropout_mask(p, key, got)
        ref.dropout_mask(p, key, expected)
        assert np.array_equal(fast.to_host(got), expected), (p, key)
    if p > 0:  # the mask really drops elements at about rate p
        big = fast.zeros((512, 512), dtype)
        fast.dropout_mask(p, KEYS[1], big)
        assert abs((fast.to_host(big) == 0).mean() - p) < 0.01


def test_dropout_mask_into_a_view(fast, ref):
    base = fast.to_device(np.full((9, 20), 7.0), np.float32)
    fast.dropout_mask(0.4, KEYS[2], base[:, 3:14])
    expected = np.empty((9, 11), np.float32)
    ref.dropout_mask(0.4, KEYS[2], expected)
    base = fast.to_host(base)
    assert np.array_equal(base[:, 3:14], expected)
    assert (base[:, :3] == 7).all() and (base[:, 14:] == 7).all()


@pytest.mark.parametrize("kind", [spec.OUTPUT_NONE, spec.OUTPUT_SIGMOID, spec.OUTPUT_SOFTMAX])
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (1, 1000), (33, 5)], ids=str)
def test_apply_output(fast, ref, dtype, kind, shape):
    g = np.random.default_rng(6)
    X = (g.standard_normal(shape) * 8).astype(dtype)
    X[0, 0] = 60  # far from the others: large exponent range in one row
    got, expected = fast.zeros(shape, dtype), ref.zeros(shape, dtype)
    fast.apply_output(kind, fast.to_device(X, dtype), got)
    ref.apply_output(kind, X, expected)
    assert_close(fast.to_host(got), expected, dtype, f"output {kind}")
    # The same values, not contiguous.
    strided = fast.to_device(np.repeat(X, 2, axis=1), dtype)[:, ::2]
    fast.apply_output(kind, strided, got)
    assert_close(fast.to_host(got), expected, dtype, f"output {kind}, strided input")


def test_apply_output_propagates_nan(fast):
    X = np.array([[0.0, np.nan, 1.0], [1.0, 2.0, 3.0]])
    out = fast.empty(X.shape, np.float32)
    fast.apply_output(spec.OUTPUT_SOFTMAX, fast.to_device(X, np.float32), out)
    out = fast.to_host(out)
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


def test_dropout_so_small_nothing_drops(fast, ref):
    """p below 2^-32 drops no element but still scales by 1 / (1 - p)."""
    X, W, b, slope, dY = layer_inputs((5, 4, 6), np.float64, "contiguous")
    Xf, Wf, bf, slope_f, dYf = layer_inputs((5, 4, 6), np.float64, "contiguous", backend=fast)
    p = 1e-12
    _, Yf = run_forward(fast, Xf, Wf, bf, spec.RELU, slope_f, p, KEYS[1], in_place=False)
    _, Yr = run_forward(ref, X, W, b, spec.RELU, slope, p, KEYS[1], in_place=False)
    assert_close(fast.to_host(Yf), Yr, np.float64, "Y")
    got = run_backward(fast, dYf, Xf, Wf, Yf, spec.RELU, slope_f, p, KEYS[1], alias="Z")
    expected = run_backward(ref, dY, X, W, fast.to_host(Yf), spec.RELU, slope, p, KEYS[1],
                            alias="separate")
    assert_close(fast.to_host(got["dZ"]), expected["dZ"], np.float64, "dZ")


@pytest.fixture
def parallel_cpu(monkeypatch):
    """kernels.cpu with every op on its parallel (prange) kernel: the work threshold at 0.

    Tests otherwise run the serial kernels only, their inputs being small. CPU-only by
    nature (numba's prange kernels); kernels.cpu's arrays are NumPy arrays, so these
    tests hand it host arrays directly."""
    from conftest import load_backend

    cpu = load_backend("cpu")
    from kernels.cpu import dense, losses, optim
    for module in (dense, losses, optim):
        monkeypatch.setattr(module, "PARALLEL_MIN_WORK", 0)
    return cpu


@pytest.mark.parametrize("act", [spec.IDENTITY, spec.PRELU])
def test_parallel_kernels(parallel_cpu, ref, act):
    """float32 only: the parallel kernels are the serial ones' source with prange, and
    compiling them is the slow part of this suite. 150 columns: several column blocks."""
    dtype = np.float32
    X, W, b, slope, dY = layer_inputs((40, 17, 150), dtype, "contiguous", seed=8)
    Z = np.random.default_rng(9).standard_normal(dY.shape).astype(dtype)
    for p, key in [(0.0, 0), (0.3, KEYS[1])]:
        Zf, Yf = run_forward(parallel_cpu, X, W, b, act, slope, p, key, in_place=False)
        Zr, Yr = run_forward(ref, X, W, b, act, slope, p, key, in_place=False)
        assert_close(Zf, Zr, dtype, f"Z, p={p}")
        assert_close(Yf, Yr, dtype, f"Y, p={p}")
        got = run_backward(parallel_cpu, dY, X, W, Z, act, slope, p, key, alias=engine_alias(act))
        expected = run_backward(ref, dY, X, W, Z, act, slope, p, key, alias="separate")
        assert_backward_close(got, expected, dY, X, W, Z, p, dtype, f"p={p}")
        got = run_frozen_backward(parallel_cpu, dY, X, W, Z, act, slope, p, key, engine_alias(act), True)
        assert_close(got["dZ"], expected["dZ"], dtype, f"frozen dZ, p={p}")
        assert_sum_close(got["dX"], expected["dX"], np.abs(expected["dZ"]) @ np.abs(W.T), dtype,
                         f"frozen dX, p={p}")
    if act == spec.IDENTITY:  # the other kernels of this module, once
        got, expected = parallel_cpu.zeros((33, 70), dtype), ref.zeros((33, 70), dtype)
        parallel_cpu.dropout_mask(0.4, KEYS[2], got)
        ref.dropout_mask(0.4, KEYS[2], expected)
        assert np.array_equal(got, expected)
        logits = np.ascontiguousarray(Z[:33, :70]) * 4
        for kind in (spec.OUTPUT_SIGMOID, spec.OUTPUT_SOFTMAX):
            parallel_cpu.apply_output(kind, logits, got)
            ref.apply_output(kind, logits, expected)
            assert_close(got, expected, dtype, f"output {kind}")
