"""kernels.reference batch norm and layer norm (spec.Backend.norm_forward / norm_backward),
checked against PyTorch's BatchNorm1d and LayerNorm, against a composition of the
reference's dense ops (activation and dropout), and against finite differences.

Everything here is float64 but the check that float32 agrees with it.
"""
import numpy as np
import pytest

import kernels.reference as ref
from finite_differences import central_diff
from kernels import rng, spec

ALL_ACTS = list(range(12))
ACT_NAMES = ["identity", "relu", "leaky_relu", "elu", "selu", "gelu", "gelu_tanh", "silu",
             "softplus", "tanh", "sigmoid", "prelu"]
KINDS = [spec.NORM_BATCH, spec.NORM_LAYER]
KIND_NAMES = ["batch", "layer"]
ACT_PARAM = {spec.LEAKY_RELU: 0.07, spec.ELU: 1.3}
EPS = 1e-5
MOMENTUM = 0.1

# Two float64 computations of the same formulas in another order (torch's, or ours
# composed of other ops) agree to a few roundings of their largest terms.
VAL_RTOL, VAL_ATOL = 1e-12, 1e-13
# Finite differences: as tests/test_reference_dense.py argues for the same EPS (1e-6).
FD_RTOL, FD_ATOL = 1e-6, 1e-7


def torch_or_skip():
    return pytest.importorskip("torch", reason="torch is not installed: the PyTorch comparisons need it")


def make_inputs(seed, n=7, m=5):
    """Z, b, gamma, beta, prelu slopes and an upstream gradient R, float64. Columns get
    different scales and offsets, so a wrong axis of the statistics shows."""
    g = np.random.default_rng(seed)
    Z = g.standard_normal((n, m)) * g.uniform(0.5, 3.0, m) + g.uniform(-2, 2, m)
    b = g.standard_normal(m)
    gamma = g.uniform(0.5, 1.5, m) * np.where(np.arange(m) % 2, -1.0, 1.0)  # both signs
    beta = g.standard_normal(m) * 0.5
    slope = np.array([0.25, -0.1, 0.5, 1.7, 0.03, 0.4, 0.8])[:m].copy()
    R = g.standard_normal((n, m))
    return Z, b, gamma, beta, slope, R


def forward(kind, Z, b, gamma, beta, running=None, training=True, act=spec.IDENTITY, slope=None,
            p=0.0, key=0):
    """(xhat, rstd, Y) of norm_forward on fresh outputs; ``running`` (mean, var) updated."""
    n, m = Z.shape
    mean, var = running if running is not None else (None, None)
    xhat, Y = np.empty_like(Z), np.empty_like(Z)
    rstd = np.empty(m if kind == spec.NORM_BATCH else n, Z.dtype)
    ref.norm_forward(kind, Z, b, gamma, beta, EPS, training, MOMENTUM, mean, var, act,
                     ACT_PARAM.get(act, 0.0), slope, p, key, xhat, rstd, Y)
    return xhat, rstd, Y


def backward(kind, dY, xhat, gamma, beta, rstd, act=spec.IDENTITY, slope=None, p=0.0, key=0):
    """dict(dZ, db, dgamma, dbeta, dslope) of norm_backward on fresh outputs."""
    m = xhat.shape[1]
    out = dict(dZ=np.empty_like(xhat), db=np.empty(m, xhat.dtype), dgamma=np.empty(m, xhat.dtype),
               dbeta=np.empty(m, xhat.dtype),
               dslope=np.empty(m, xhat.dtype) if act == spec.PRELU else None)
    ref.norm_backward(kind, dY, xhat, gamma, beta, rstd, act, ACT_PARAM.get(act, 0.0), slope, p,
                      key, out["dZ"], out["db"], out["dgamma"], out["dbeta"], out["dslope"])
    return out


def close(actual, desired, what, rtol=VAL_RTOL, atol=VAL_ATOL):
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, err_msg=what)


# ------------------------------------------------------------------- PyTorch

def torch_norm(torch, kind, m):
    if kind == spec.NORM_BATCH:
        return torch.nn.BatchNorm1d(m, eps=EPS, momentum=MOMENTUM, dtype=torch.float64)
    return torch.nn.LayerNorm(m, eps=EPS, elementwise_affine=True, dtype=torch.float64)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_NAMES)
def test_training_forward_and_backward_match_pytorch(kind):
    """Several training steps on new batches: Y, rstd (torch's saved inverse std),
    the running estimates after each, and the gradients of sum(Y * R) with respect to
    Z, b, gamma and beta."""
    torch = torch_or_skip()
    n, m = 9, 5
    _, _, gamma, beta, _, _ = make_inputs(0, n, m)
    module = torch_norm(torch, kind, m)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(gamma))
        module.bias.copy_(torch.from_numpy(beta))
    running = (np.zeros(m), np.ones(m)) if kind == spec.NORM_BATCH else None
    for step in range(4):
        Z, b, _, _, _, R = make_inputs(10 + step, n, m)
        xhat, rstd, Y = forward(kind, Z, b, gamma, beta, running)
        grads = backward(kind, R, xhat, gamma, beta, rstd)

        Zt = torch.tensor(Z, requires_grad=True)
        bt = torch.tensor(b, requires_grad=True)
        module.zero_grad()
        Yt = module(Zt + bt)
        (Yt * torch.from_numpy(R)).sum().backward()
        close(Y, Yt.detach().numpy(), f"Y, step {step}")
        close(grads["dZ"], Zt.grad.numpy(), f"dZ, step {step}")
        close(grads["db"], bt.grad.numpy(), f"db, step {step}")
        close(grads["dgamma"], module.weight.grad.numpy(), f"dgamma, step {step}")
        close(grads["dbeta"], module.bias.grad.numpy(), f"dbeta, step {step}")
        H = torch.from_numpy(Z + b)
        if kind == spec.NORM_BATCH:
            close(running[0], module.running_mean.numpy(), f"running_mean, step {step}")
            close(running[1], module.running_var.numpy(), f"running_var, step {step}")
            saved = torch.native_batch_norm(H, None, None, None, None, True, 0.0, EPS)[2]
        else:
            saved = torch.native_layer_norm(H, (m,), None, None, EPS)[2].ravel()
        close(rstd, saved.numpy(), f"rstd, step {step}")
        close(xhat, (Y - beta) / gamma, f"xhat, step {step}", atol=1e-12)


def test_batch_norm_evaluation_matches_pytorch_and_leaves_running_estimates():
    """After training steps, evaluation normalizes by the running estimates, one row as
    in a batch, and changes neither estimate."""
    torch = torch_or_skip()
    n, m = 6, 4
    _, _, gamma, beta, _, _ = make_inputs(1, n, m)
    module = torch_norm(torch, spec.NORM_BATCH, m)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(gamma))
        module.bias.copy_(torch.from_numpy(beta))
    running = (np.zeros(m), np.ones(m))
    for step in range(3):
        Z, b, *_ = make_inputs(20 + step, n, m)
        forward(spec.NORM_BATCH, Z, b, gamma, beta, running)
        module(torch.from_numpy(Z + b))
    module.eval()
    Z, b, *_ = make_inputs(30, n, m)
    before = (running[0].copy(), running[1].copy())
    _, rstd, Y = forward(spec.NORM_BATCH, Z, b, gamma, beta, running, training=False)
    with torch.no_grad():
        expected = module(torch.from_numpy(Z + b)).numpy()
    close(Y, expected, "Y in evaluation")
    close(rstd, 1.0 / np.sqrt(before[1] + EPS), "rstd from the running variance")
    np.testing.assert_array_equal(running[0], before[0])
    np.testing.assert_array_equal(running[1], before[1])
    _, _, one = forward(spec.NORM_BATCH, Z[2:3], b, gamma, beta, running, training=False)
    np.testing.assert_array_equal(one, Y[2:3])


def test_layer_norm_is_the_same_in_evaluation_and_for_one_row():
    Z, b, gamma, beta, _, _ = make_inputs(2)
    _, _, Y = forward(spec.NORM_LAYER, Z, b, gamma, beta)
    _, _, Y_eval = forward(spec.NORM_LAYER, Z, b, gamma, beta, training=False)
    _, _, one = forward(spec.NORM_LAYER, Z[3:4], b, gamma, beta)
    np.testing.assert_array_equal(Y_eval, Y)
    np.testing.assert_array_equal(one, Y[3:4])


def test_running_variance_is_unbiased_by_hand():
    """Two rows: mean (a + c) / 2, biased variance ((a - c) / 2)^2, unbiased twice that."""
    Z = np.array([[1.0, -2.0], [4.0, 6.0]])
    running = (np.array([0.5, 0.0]), np.array([1.0, 2.0]))
    _, rstd, _ = forward(spec.NORM_BATCH, Z, np.zeros(2), np.ones(2), np.zeros(2), running)
    close(running[0], [0.9 * 0.5 + 0.1 * 2.5, 0.1 * 2.0], "running_mean")
    close(running[1], [0.9 * 1.0 + 0.1 * 4.5, 0.9 * 2.0 + 0.1 * 32.0], "running_var")
    close(rstd, [1 / np.sqrt(2.25 + EPS), 1 / np.sqrt(16.0 + EPS)], "rstd")


# -------------------------------------------- activation and dropout by composition

@pytest.mark.parametrize("p", [0.0, 0.4], ids=["no_dropout", "dropout0.4"])
@pytest.mark.parametrize("act", ALL_ACTS, ids=ACT_NAMES)
@pytest.mark.parametrize("kind", KINDS, ids=KIND_NAMES)
def test_activation_and_dropout_compose_as_dense_ops(kind, act, p):
    """norm_forward with an activation and dropout is the identity norm followed by a
    dense_forward of weights I and bias 0 (whose Z is A exactly); the backward is
    dense_backward's dA fed to the identity norm's backward without dropout."""
    Z, b, gamma, beta, slope, R = make_inputs(40 + act)
    m = Z.shape[1]
    s = slope if act == spec.PRELU else None
    key = rng.dropout_key(3, 5, 7)
    a_param = ACT_PARAM.get(act, 0.0)
    xhat, rstd, Y = forward(kind, Z, b, gamma, beta, (np.zeros(m), np.ones(m)), act=act, slope=s,
                            p=p, key=key)
    grads = backward(kind, R, xhat, gamma, beta, rstd, act=act, slope=s, p=p, key=key)

    xhat0, rstd0, A = forward(kind, Z, b, gamma, beta, (np.zeros(m), np.ones(m)))
    eye, zeros = np.eye(m), np.zeros(m)
    Z1, Y1 = np.empty_like(A), np.empty_like(A)
    ref.dense_forward(A, eye, zeros, act, a_param, s, p, key, Z1, Y1)
    np.testing.assert_array_equal(xhat, xhat0)
    np.testing.assert_array_equal(rstd, rstd0)
    np.testing.assert_array_equal(Y, Y1)

    dA, dW, db1 = np.empty_like(A), np.empty((m, m)), np.empty(m)
    dslope = np.empty(m) if act == spec.PRELU else None
    ref.dense_backward(R, A, eye, Z1, act, a_param, s, p, key, dA, dW, db1, dslope, None)
    expected = backward(kind, dA, xhat, gamma, beta, rstd)
    for name in ("dZ", "db", "dgamma", "dbeta"):
        close(grads[name], expected[name], name)
    if act == spec.PRELU:
        close(grads["dslope"], dslope, "dslope")
    else:
        assert grads["dslope"] is None


# ------------------------------------------------------ finite differences

@pytest.mark.parametrize("act", [spec.IDENTITY, spec.TANH, spec.GELU, spec.PRELU],
                         ids=["identity", "tanh", "gelu", "prelu"])
@pytest.mark.parametrize("kind", KINDS, ids=KIND_NAMES)
def test_backward_matches_finite_differences(kind, act):
    """dZ, db, dgamma, dbeta (and dslope) are the gradients of sum(Y * R), dropout on."""
    Z, b, gamma, beta, slope, R = make_inputs(60 + act, n=6, m=5)
    s = slope if act == spec.PRELU else None
    p, key = 0.3, rng.dropout_key(1, 2, 3)
    running = (np.zeros(5), np.ones(5))  # updated by every call; the training output ignores it

    def f():
        return float(np.sum(forward(kind, Z, b, gamma, beta, running, act=act, slope=s, p=p,
                                    key=key)[2] * R))

    xhat, rstd, _ = forward(kind, Z, b, gamma, beta, running, act=act, slope=s, p=p, key=key)
    if act == spec.PRELU:  # off the kink at A == 0 by far more than the FD steps move A
        assert np.abs(gamma * xhat + beta).min() > 1e-3
    grads = backward(kind, R, xhat, gamma, beta, rstd, act=act, slope=s, p=p, key=key)
    for name, array in (("dZ", Z), ("db", b), ("dgamma", gamma), ("dbeta", beta)):
        close(grads[name], central_diff(f, array), name, FD_RTOL, FD_ATOL)
    if act == spec.PRELU:
        close(grads["dslope"], central_diff(f, slope), "dslope", FD_RTOL, FD_ATOL)


def test_batch_norm_bias_gradient_is_zero_by_the_formula():
    """Adding a constant to a column changes no batch-normalized output, so db = 0 (to the
    rounding of a sum that cancels)."""
    Z, b, gamma, beta, _, R = make_inputs(5, n=12, m=4)
    xhat, rstd, _ = forward(spec.NORM_BATCH, Z, b, gamma, beta, (np.zeros(4), np.ones(4)))
    grads = backward(spec.NORM_BATCH, R, xhat, gamma, beta, rstd)
    close(grads["db"], 0.0, "db", atol=1e-13)
    assert np.abs(grads["dZ"]).max() > 0.1


# ----------------------------------------------------- arguments and aliasing

def test_aliasing_allowed_by_spec():
    """xhat written over Z, Y over Z too (Z ends holding Y), dZ over xhat or dY: the
    results of separate arrays."""
    for kind in KINDS:
        Z, b, gamma, beta, slope, R = make_inputs(7)
        args = (b, gamma, beta, EPS, True, MOMENTUM, np.zeros(5), np.ones(5), spec.PRELU, 0.0,
                slope, 0.3, 11)
        xhat, rstd, Y = forward(kind, Z, b, gamma, beta, (np.zeros(5), np.ones(5)), act=spec.PRELU,
                                slope=slope, p=0.3, key=11)
        Zc, rstd_c, Yc = Z.copy(), np.empty_like(rstd), np.empty_like(Y)
        ref.norm_forward(kind, Zc, *args, Zc, rstd_c, Yc)
        np.testing.assert_array_equal(Zc, xhat)
        np.testing.assert_array_equal(Yc, Y)
        Zc = Z.copy()
        ref.norm_forward(kind, Zc, *args, Zc, rstd_c, Zc)
        np.testing.assert_array_equal(Zc, Y)
        expected = backward(kind, R, xhat, gamma, beta, rstd, spec.PRELU, slope, 0.3, 11)
        for alias in ("xhat", "dY"):
            xc, dYc = xhat.copy(), R.copy()
            got = dict(dZ=xc if alias == "xhat" else dYc, db=np.empty(5), dgamma=np.empty(5),
                       dbeta=np.empty(5), dslope=np.empty(5))
            ref.norm_backward(kind, dYc, xc, gamma, beta, rstd, spec.PRELU, 0.0, slope, 0.3, 11,
                              *got.values())
            for name in got:
                np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{name}, dZ is {alias}")


@pytest.mark.parametrize("kind", KINDS, ids=KIND_NAMES)
def test_frozen_backward_computes_dZ_alone(kind):
    Z, b, gamma, beta, slope, R = make_inputs(8)
    xhat, rstd, _ = forward(kind, Z, b, gamma, beta, (np.zeros(5), np.ones(5)), act=spec.PRELU,
                            slope=slope)
    full = backward(kind, R, xhat, gamma, beta, rstd, spec.PRELU, slope)
    dZ = np.empty_like(Z)
    ref.norm_backward(kind, R, xhat, gamma, beta, rstd, spec.PRELU, 0.0, slope, 0.0, 0, dZ, None,
                      None, None, None)
    np.testing.assert_array_equal(dZ, full["dZ"])
    m = np.empty(5)
    for grads, what in [((m, None, None, None), "db, dgamma, dbeta"),
                        ((None, m, m, None), "db, dgamma, dbeta"), ((None, None, None, m), "dslope")]:
        with pytest.raises(ValueError, match=what):
            ref.norm_backward(kind, R, xhat, gamma, beta, rstd, spec.PRELU, 0.0, slope, 0.0, 0, dZ,
                              *grads)


def test_bad_kind_and_one_training_row_are_value_errors():
    Z, b, gamma, beta, _, _ = make_inputs(9, n=1)
    running = (np.zeros(5), np.ones(5))
    with pytest.raises(ValueError, match="at least 2 rows"):
        forward(spec.NORM_BATCH, Z, b, gamma, beta, running)
    np.testing.assert_array_equal(running[0], 0.0)  # nothing written before the error
    forward(spec.NORM_BATCH, Z, b, gamma, beta, running, training=False)  # one row: fine
    forward(spec.NORM_LAYER, Z, b, gamma, beta)
    with pytest.raises(ValueError, match="kind"):
        forward(3, Z, b, gamma, beta, running)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_NAMES)
def test_float32_agrees_with_float64(kind):
    """float32 inputs give the float64 results to float32 accuracy: the statistics are
    accumulated in float64 (spec), so xhat is off by a few roundings only."""
    Z, b, gamma, beta, slope, R = make_inputs(10, n=33, m=7)
    key = rng.dropout_key(4, 4, 4)
    run = {}
    for dtype in (np.float64, np.float32):
        c = [a.astype(dtype) for a in (Z, b, gamma, beta, slope, R)]
        running = (np.zeros(7, dtype), np.ones(7, dtype))
        xhat, rstd, Y = forward(kind, *c[:4], running, act=spec.SILU, p=0.2, key=key)
        grads = backward(kind, c[5], xhat, c[2], c[3], rstd, spec.SILU, None, 0.2, key)
        run[dtype] = (xhat, rstd, Y, *running, grads["dZ"], grads["db"], grads["dgamma"], grads["dbeta"])
    for got, want in zip(run[np.float32], run[np.float64]):
        assert got.dtype == np.float32
        # xhat, rstd, Y: a few float32 roundings (6e-8) of values of order 1-3; the
        # gradients sum 33 terms of order 1: 2e-5 absolute is well above either.
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
