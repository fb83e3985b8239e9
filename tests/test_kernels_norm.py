"""Batch norm and layer norm (spec.Backend.norm_forward / norm_backward) of the fast
backends, op by op against kernels.reference (itself checked against PyTorch and finite
differences in tests/test_reference_norm.py).

As in tests/test_kernels_dense.py, each backend gets its inputs as its own arrays
(``fast.to_device``, views taken on those) and its results are compared on the host, so
the same tests run on kernels.cpu and kernels.cuda.
"""
import numpy as np
import pytest

import kernels.reference as reference
from kernels import spec
from test_kernels_dense import ACT_PARAM, KEYS, assert_close, assert_sum_close, backend_copy

KINDS = [spec.NORM_BATCH, spec.NORM_LAYER]
KIND_NAMES = ["batch", "layer"]
# The activation code is shared with the dense kernels (tested there on every code): the
# norm kernels get one of each way of using it (none, a kink, a smooth one, prelu's slopes).
ACTIVATIONS = [spec.IDENTITY, spec.RELU, spec.SILU, spec.PRELU]
# (N, M): a single element (batch norm then only in evaluation), two rows, odd sizes, one
# wide row, several of the numba backend's column blocks when parallel.
SHAPES = [(1, 1), (2, 1), (7, 13), (33, 5), (1, 300), (130, 150)]
EPS, MOMENTUM = 1e-5, 0.1


def legal(kind, training, n):
    return not (kind == spec.NORM_BATCH and training and n < 2)


def norm_inputs(shape, dtype, seed=0, backend=reference, layout="contiguous"):
    """Z, b, gamma, beta, prelu slope and an upstream gradient dY as arrays of ``backend``;
    every backend and layout gets the same values. ``layout`` "strided": Z and dY column
    slices of wider arrays (rows not adjacent)."""
    n, m = shape
    g = np.random.default_rng(seed)
    values = [g.standard_normal((n, m)) * g.uniform(0.5, 3.0, m) + g.uniform(-2, 2, m),
              g.standard_normal(m), g.uniform(0.5, 1.5, m) * np.where(np.arange(m) % 2, -1.0, 1.0),
              g.standard_normal(m) * 0.5, g.uniform(0.05, 0.5, m), g.standard_normal((n, m))]

    def matrix(host):
        if layout == "strided":
            wide = np.full((n, m + 7), 1e3)
            wide[:, 3:3 + m] = host
            return backend.to_device(wide, dtype)[:, 3:3 + m]
        return backend.to_device(host, dtype)

    Z, b, gamma, beta, slope, dY = values
    return (matrix(Z), *(backend.to_device(v, dtype) for v in (b, gamma, beta, slope)), matrix(dY))


def run_forward(backend, kind, Z, b, gamma, beta, training, act, slope, p, key, running,
                steps=1, alias="separate"):
    """Host dict of xhat, rstd, Y, alive and the running estimates after ``steps`` calls
    on the same Z. ``running``: host (mean, var), copied to the backend; ``alias`` "Z":
    xhat written over (a copy of) Z, "Y": xhat and Y both over it."""
    n, m = Z.shape
    dtype = Z.dtype
    # Copies: to_device may return the host array itself, which the op then updates.
    mean, var = (backend_copy(backend, a) for a in running) if kind == spec.NORM_BATCH else (None, None)
    rstd = backend.zeros((m if kind == spec.NORM_BATCH else n,), dtype)
    alive = backend.to_device(np.zeros(m, np.uint8), np.uint8)
    for _ in range(steps):
        Zc = backend_copy(backend, Z) if alias != "separate" else Z
        xhat = Zc if alias != "separate" else backend.zeros((n, m), dtype)
        Y = xhat if alias == "Y" else backend.zeros((n, m), dtype)
        backend.norm_forward(kind, Zc, b, gamma, beta, EPS, training, MOMENTUM, mean, var, act,
                             ACT_PARAM, slope if act == spec.PRELU else None, p, key, xhat, rstd, Y,
                             alive)
    out = dict(xhat=None if alias == "Y" else xhat, rstd=rstd, Y=Y, alive=alive, mean=mean, var=var)
    return {name: None if a is None else backend.to_host(a) for name, a in out.items()}


def assert_forward_close(got, expected, dtype, context):
    for name in ("xhat", "rstd", "Y", "mean", "var"):
        assert (got[name] is None) == (expected[name] is None), name
        if got[name] is not None:
            assert_close(got[name], expected[name], dtype, f"{name}, {context}")
    np.testing.assert_array_equal(got["alive"], expected["alive"], err_msg=f"alive, {context}")


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", KINDS, ids=KIND_NAMES)
def test_norm_forward(fast, ref, dtype, kind, act, shape):
    """Training (two steps: the running estimates move twice) and evaluation, dropout off
    and on, against the reference."""
    Z, b, gamma, beta, slope, _ = norm_inputs(shape, dtype)
    Zf, bf, gamma_f, beta_f, slope_f, _ = norm_inputs(shape, dtype, backend=fast)
    running = (np.linspace(-1, 1, shape[1]).astype(dtype), np.linspace(0.5, 2, shape[1]).astype(dtype))
    for training in (True, False):
        if not legal(kind, training, shape[0]):
            continue
        for p, key in [(0.0, 0), (0.3, KEYS[1])]:
            context = f"training={training}, p={p}"
            expected = run_forward(ref, kind, Z, b, gamma, beta, training, act, slope, p, key,
                                   running, steps=2)
            got = run_forward(fast, kind, Zf, bf, gamma_f, beta_f, training, act, slope_f, p, key,
                              running, steps=2)
            assert_forward_close(got, expected, dtype, context)
            mask = ref.zeros(shape, dtype)
            ref.dropout_mask(p, key, mask)
            assert (got["Y"][mask == 0] == 0).all(), context  # the same elements dropped


@pytest.mark.parametrize("alias", ["Z", "Y"])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("kind", KINDS, ids=KIND_NAMES)
def test_norm_forward_in_place_and_views(fast, ref, dtype, kind, layout, alias):
    """xhat written over Z (and Y too: Z ends holding Y), Z a view with rows apart."""
    shape = (40, 19)
    Z, b, gamma, beta, slope, _ = norm_inputs(shape, dtype, seed=1)
    Zf, bf, gamma_f, beta_f, slope_f, _ = norm_inputs(shape, dtype, seed=1, backend=fast, layout=layout)
    running = (np.zeros(19, dtype), np.ones(19, dtype))
    expected = run_forward(ref, kind, Z, b, gamma, beta, True, spec.PRELU, slope, 0.5, KEYS[2], running)
    got = run_forward(fast, kind, Zf, bf, gamma_f, beta_f, True, spec.PRELU, slope_f, 0.5, KEYS[2],
                      running, alias=alias)
    if alias == "Y":
        expected["xhat"] = None
    assert_forward_close(got, expected, dtype, f"xhat over Z, Y {'over Z' if alias == 'Y' else 'apart'}")


def run_backward(backend, kind, dY, xhat, gamma, beta, rstd, act, slope, p, key, alias, frozen=False):
    """Host dict of dZ, db, dgamma, dbeta, dslope; ``alias`` "xhat" or "dY" makes dZ that
    array (copies given), "separate" an array of its own."""
    dtype = dY.dtype
    m = dY.shape[1]
    dY_c, xhat_c = backend_copy(backend, dY), backend_copy(backend, xhat)
    dZ = {"xhat": xhat_c, "dY": dY_c}.get(alias)
    if alias == "separate":
        dZ = backend.zeros(dY.shape, dtype)
    grads = dict(db=None, dgamma=None, dbeta=None, dslope=None)
    if not frozen:
        grads = {name: backend.zeros((m,), dtype) for name in grads}
        if act != spec.PRELU:
            grads["dslope"] = None
    backend.norm_backward(kind, dY_c, xhat_c, gamma, beta, rstd, act, ACT_PARAM,
                          slope if act == spec.PRELU else None, p, key, dZ, *grads.values())
    return {name: None if a is None else backend.to_host(a) for name, a in dict(dZ=dZ, **grads).items()}


def reference_terms(kind, dY, xhat, gamma, beta, rstd, act, slope, p, key):
    """Magnitudes of the terms each output sums, from the reference's float64 pieces, for
    assert_sum_close: dZ's three terms (dxhat and its two means, which add K terms each),
    and the sums of |dH|, |dA xhat|, |dA|, |u min(A, 0)| over the rows."""
    f = [np.asarray(a, np.float64) for a in (dY, xhat, gamma, beta, rstd)]
    dY, xhat, gamma, beta, rstd = f
    A = gamma * xhat + beta
    mask = reference.zeros(dY.shape, np.float64)
    reference.dropout_mask(p, key, mask)
    upstream = np.abs(dY * mask)
    derivative = np.empty_like(A)
    reference.dense_backward(np.ones_like(A), A, np.eye(A.shape[1]), A, act, ACT_PARAM,
                             None if slope is None else np.asarray(slope, np.float64), 0.0, 0,
                             derivative, None, None, None, None)
    dA = upstream * np.abs(derivative)
    dxhat = dA * np.abs(gamma)
    axis = 0 if kind == spec.NORM_BATCH else 1
    r = rstd.reshape((1, -1) if axis == 0 else (-1, 1))
    dZ = r * (dxhat + dxhat.mean(axis=axis, keepdims=True)
              + np.abs(xhat) * (dxhat * np.abs(xhat)).mean(axis=axis, keepdims=True))
    return dict(dZ=dZ, db=dZ.sum(axis=0), dgamma=(dA * np.abs(xhat)).sum(axis=0), dbeta=dA.sum(axis=0),
                dslope=(upstream * np.abs(np.minimum(A, 0))).sum(axis=0))


def assert_backward_close(got, expected, terms, dtype, context):
    for name in ("dZ", "db", "dgamma", "dbeta", "dslope"):
        assert (got[name] is None) == (expected[name] is None), f"{name}, {context}"
        if got[name] is not None:
            assert_sum_close(got[name], expected[name], terms[name], dtype, f"{name}, {context}")


def backward_case(kind, shape, dtype, seed, backend, act, layout="contiguous"):
    """The backward's inputs on ``backend``: dY and the reference forward's xhat and rstd
    (training), with gamma, beta and the slope; the same values on every backend."""
    Z, b, gamma, beta, slope, dY = norm_inputs(shape, dtype, seed)
    running = (np.zeros(shape[1], dtype), np.ones(shape[1], dtype))
    out = run_forward(reference, kind, Z, b, gamma, beta, True, act, slope, 0.0, 0, running)
    if backend is reference:
        return dY, out["xhat"], gamma, beta, out["rstd"], slope
    views = norm_inputs(shape, dtype, seed, backend=backend, layout=layout)
    dY_f = views[5]
    return dY_f, backend.to_device(out["xhat"], dtype), *views[2:4], backend.to_device(out["rstd"], dtype), views[4]


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", KINDS, ids=KIND_NAMES)
def test_norm_backward(fast, ref, dtype, kind, act, shape):
    """dZ written over xhat, as the model keeps it; dropout off and on."""
    if not legal(kind, True, shape[0]):
        pytest.skip("batch norm trains on 2 rows or more")
    inputs = backward_case(kind, shape, dtype, 2, ref, act)
    inputs_f = backward_case(kind, shape, dtype, 2, fast, act)
    for p, key in [(0.0, 0), (0.3, KEYS[3])]:
        expected = run_backward(ref, kind, *inputs[:5], act, inputs[5], p, key, "separate")
        got = run_backward(fast, kind, *inputs_f[:5], act, inputs_f[5], p, key, "xhat")
        terms = reference_terms(kind, *inputs[:5], act, inputs[5], p, key)
        assert_backward_close(got, expected, terms, dtype, f"p={p}")


@pytest.mark.parametrize("alias", ["separate", "xhat", "dY"])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("kind", KINDS, ids=KIND_NAMES)
def test_norm_backward_aliases_views_and_frozen(fast, ref, dtype, kind, layout, alias):
    """Every aliasing of dZ, dY a view with rows apart, prelu with dropout; and the
    frozen backward (all gradients None): the full backward's dZ."""
    shape = (40, 150)
    act, p = spec.PRELU, 0.25
    inputs = backward_case(kind, shape, dtype, 4, ref, act)
    inputs_f = backward_case(kind, shape, dtype, 4, fast, act, layout)
    terms = reference_terms(kind, *inputs[:5], act, inputs[5], p, KEYS[2])
    expected = run_backward(ref, kind, *inputs[:5], act, inputs[5], p, KEYS[2], "separate")
    got = run_backward(fast, kind, *inputs_f[:5], act, inputs_f[5], p, KEYS[2], alias)
    assert_backward_close(got, expected, terms, dtype, f"dZ is {alias}")
    frozen = run_backward(fast, kind, *inputs_f[:5], act, inputs_f[5], p, KEYS[2], alias, frozen=True)
    assert all(frozen[name] is None for name in ("db", "dgamma", "dbeta", "dslope"))
    assert_sum_close(frozen["dZ"], expected["dZ"], terms["dZ"], dtype, f"frozen dZ, dZ is {alias}")


def test_bad_arguments_are_value_errors(fast):
    Z, b, gamma, beta, slope, dY = norm_inputs((1, 4), np.float32, backend=fast)
    mean, var = fast.zeros((4,), np.float32), fast.zeros((4,), np.float32)
    outputs = (fast.zeros((1, 4), np.float32), fast.zeros((4,), np.float32), fast.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="at least 2 rows"):
        fast.norm_forward(spec.NORM_BATCH, Z, b, gamma, beta, EPS, True, MOMENTUM, mean, var,
                          spec.RELU, 0.0, None, 0.0, 0, *outputs)
    assert not fast.to_host(var).any()  # running estimates untouched
    with pytest.raises(ValueError, match="kind"):
        fast.norm_forward(0, Z, b, gamma, beta, EPS, True, MOMENTUM, mean, var, spec.RELU, 0.0, None,
                          0.0, 0, *outputs)
    xhat, rstd = outputs[0], fast.zeros((1,), np.float32)
    m = fast.zeros((4,), np.float32)
    for grads, message in [((m, None, None, None), "db, dgamma, dbeta"), ((None, None, None, m), "dslope")]:
        with pytest.raises(ValueError, match=message):
            fast.norm_backward(spec.NORM_LAYER, dY, xhat, gamma, beta, rstd, spec.PRELU, 0.0, slope,
                               0.0, 0, outputs[2], *grads)


@pytest.fixture
def parallel_cpu(monkeypatch):
    """kernels.cpu with the norm ops on their parallel (prange) kernels: the work threshold
    at 0 (tests otherwise run the serial kernels only, their inputs being small)."""
    from conftest import load_backend

    cpu = load_backend("cpu")
    from kernels.cpu import norm
    monkeypatch.setattr(norm, "PARALLEL_MIN_WORK", 0)
    return cpu


@pytest.mark.parametrize("kind", KINDS, ids=KIND_NAMES)
def test_parallel_kernels(parallel_cpu, ref, kind):
    """float32 and prelu only (compiling the parallel kernels is the slow part); 150
    columns: several column blocks."""
    dtype, act, p = np.float32, spec.PRELU, 0.3
    shape = (40, 150)
    Z, b, gamma, beta, slope, _ = norm_inputs(shape, dtype, seed=5)
    running = (np.zeros(150, dtype), np.ones(150, dtype))
    for training in (True, False):
        expected = run_forward(ref, kind, Z, b, gamma, beta, training, act, slope, p, KEYS[1], running)
        got = run_forward(parallel_cpu, kind, Z, b, gamma, beta, training, act, slope, p, KEYS[1],
                          running, alias="Z")
        assert_forward_close(got, expected, dtype, f"training={training}")
    inputs = backward_case(kind, shape, dtype, 6, ref, act)
    terms = reference_terms(kind, *inputs[:5], act, inputs[5], p, KEYS[1])
    expected = run_backward(ref, kind, *inputs[:5], act, inputs[5], p, KEYS[1], "separate")
    for frozen in (False, True):
        got = run_backward(parallel_cpu, kind, *inputs[:5], act, inputs[5], p, KEYS[1], "xhat", frozen)
        if frozen:
            expected = dict(expected, db=None, dgamma=None, dbeta=None, dslope=None)
        assert_backward_close(got, expected, terms, dtype, f"frozen={frozen}")


def test_sums_are_deterministic(fast):
    """Bitwise the same gradients on a second call (no atomics, fixed orders)."""
    inputs = backward_case(spec.NORM_BATCH, (300, 70), np.float32, 7, fast, spec.RELU)
    first = run_backward(fast, spec.NORM_BATCH, *inputs[:5], spec.RELU, inputs[5], 0.2, KEYS[2], "separate")
    again = run_backward(fast, spec.NORM_BATCH, *inputs[:5], spec.RELU, inputs[5], 0.2, KEYS[2], "separate")
    for name, array in first.items():
        if array is not None:
            np.testing.assert_array_equal(again[name], array, err_msg=name)
