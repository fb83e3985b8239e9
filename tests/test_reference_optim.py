"""kernels.reference optimizers against independent scalar loops of torch.optim's
documented algorithms (SGD, Adagrad, RMSprop, Adadelta, Adam/AdamW, NAdam), over
5-step trajectories with changing gradients, plus clipping, per-segment gradient
scales and a weight-decay mask, as laid out in kernels.spec.
"""
import math

import numpy as np
import pytest

import kernels.reference as ref
from kernels import spec

INF = float("inf")
SEG_LENGTHS = [4, 3, 5]
OFFSETS = np.array([0, 4, 7, 12], dtype=np.int64)
N = OFFSETS[-1]
SEG_OF = [s for s, length in enumerate(SEG_LENGTHS) for _ in range(length)]
N_STEPS = 5
# gradient magnitudes change from step to step (a drop at steps 2 and 4 lets amsgrad's
# running max differ from v; 2.0 at step 3 pushes many elements past clip_value)
STEP_SCALES = [1.0, 0.3, 2.0, 0.05, 1.2]

# The loops and the vectorised reference round differently (loop: one element at a
# time, reference: e.g. lr / bc1 folded before multiplying), ~1e-16 relative per
# operation over ~10 operations and 5 steps; 1e-12 relative plus 1e-15 absolute
# (for state entries near 0) is far below any formula mistake.
RTOL = 1e-12
ATOL = 1e-15

# Configurations shared by all optimizers: plain; weight decay with the middle segment
# exempt; and decay + value clipping + per-segment scales (norm clipping).
PLAIN = dict(seg_scale=[1.0, 1.0, 1.0], seg_decay=[0.0, 0.0, 0.0], clip_value=INF)
DECAY = dict(seg_scale=[1.0, 1.0, 1.0], seg_decay=[0.1, 0.0, 0.03], clip_value=INF)
ALL_ON = dict(seg_scale=[0.8, 0.5, 2.0], seg_decay=[0.1, 0.0, 0.03], clip_value=1.1)


def data(seed=0):
    rs = np.random.default_rng(seed)
    params = rs.normal(size=N)
    grads = [rs.normal(scale=1.5 * s, size=N) for s in STEP_SCALES]
    return params, grads


def effective(graw, i, cfg, p):
    """g = clip(raw) * seg_scale[s] + seg_decay[s] * p  (coupled decay), element i."""
    s = SEG_OF[i]
    c = cfg["clip_value"]
    g = min(max(graw, -c), c) * cfg["seg_scale"][s]
    return g + cfg["seg_decay"][s] * p


def common_args(cfg, seg_l1=None, l1_rule=spec.L1_GRADIENT):
    """The arguments from offsets to l1_rule (by default no L1 rule after the step)."""
    return (OFFSETS, np.array(cfg["seg_scale"]), np.array(cfg["seg_decay"]), cfg["clip_value"], seg_l1,
            l1_rule)


def check(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=what)


def assert_config_exercised(cfg, grads):
    """Make sure the data actually trigger what the configuration is meant to test."""
    if cfg["clip_value"] != INF:
        hits = sum(int((np.abs(g) > cfg["clip_value"]).sum()) for g in grads)
        assert 0 < hits < N * N_STEPS
    if any(cfg["seg_decay"]):
        assert 0.0 in cfg["seg_decay"]  # one exempt segment next to decayed ones


def run_reference(step_fn, params, grads, states):
    """Apply step_fn(params, g, states, t) for t = 1..N_STEPS, checking grads unchanged."""
    trajectory = []
    for t, g in enumerate(grads, start=1):
        g_before = g.copy()
        step_fn(params, g, states, t)
        np.testing.assert_array_equal(g, g_before, err_msg="grads were written")
        trajectory.append((params.copy(), [s.copy() for s in states]))
    return trajectory


# ---------------------------------------------------------------------- SGD

def sgd_loop(params, grads, cfg, lr, momentum, dampening, nesterov):
    p = list(params)
    buf = [0.0] * N
    out = []
    for t, graw in enumerate(grads, start=1):
        for i in range(N):
            g = effective(graw[i], i, cfg, p[i])
            if momentum != 0:
                # torch: the buffer starts as a copy of the first gradient (no dampening)
                buf[i] = g if t == 1 else momentum * buf[i] + (1 - dampening) * g
                g = g + momentum * buf[i] if nesterov else buf[i]
            p[i] -= lr * g
        out.append((list(p), [list(buf)]))
    return out


SGD_CASES = {
    "plain": (PLAIN, dict(momentum=0.0, dampening=0.0, nesterov=False)),
    "decay_mask": (DECAY, dict(momentum=0.0, dampening=0.0, nesterov=False)),
    "momentum": (PLAIN, dict(momentum=0.9, dampening=0.0, nesterov=False)),
    "momentum_dampening_decay": (DECAY, dict(momentum=0.8, dampening=0.3, nesterov=False)),
    "nesterov_all": (ALL_ON, dict(momentum=0.85, dampening=0.0, nesterov=True)),
    "clip_scale_momentum": (ALL_ON, dict(momentum=0.5, dampening=0.5, nesterov=False)),
}


@pytest.mark.parametrize("case", list(SGD_CASES))
def test_sgd_trajectory(case):
    cfg, hyper = SGD_CASES[case]
    lr = 0.07
    params, grads = data(1)
    assert_config_exercised(cfg, grads)
    expected = sgd_loop(params, grads, cfg, lr, **hyper)
    buf = np.zeros(N)

    def step(p, g, states, t):
        ref.sgd(p, g, states[0], *common_args(cfg), lr, hyper["momentum"], hyper["dampening"],
                hyper["nesterov"], False, t == 1)

    got = run_reference(step, params, grads, [buf])
    for t, ((p_got, s_got), (p_exp, s_exp)) in enumerate(zip(got, expected), start=1):
        check(p_got, p_exp, f"params, step {t}")
        if hyper["momentum"]:
            check(s_got[0], s_exp[0], f"momentum_buf, step {t}")


# ------------------------------------------------------------------ Adagrad

def adagrad_loop(params, grads, cfg, lr, eps):
    p = list(params)
    acc = [0.0] * N
    out = []
    for graw in grads:
        for i in range(N):
            g = effective(graw[i], i, cfg, p[i])
            acc[i] += g * g
            p[i] -= lr * g / (math.sqrt(acc[i]) + eps)  # eps outside the sqrt (torch)
        out.append((list(p), [list(acc)]))
    return out


# eps = 0.3 is large enough that putting it inside the sqrt changes the result visibly
ADAGRAD_CASES = {"plain": (PLAIN, 1e-10), "decay_mask": (DECAY, 1e-10), "all_big_eps": (ALL_ON, 0.3)}


@pytest.mark.parametrize("case", list(ADAGRAD_CASES))
def test_adagrad_trajectory(case):
    cfg, eps = ADAGRAD_CASES[case]
    lr = 0.2
    params, grads = data(2)
    assert_config_exercised(cfg, grads)
    expected = adagrad_loop(params, grads, cfg, lr, eps)

    def step(p, g, states, t):
        ref.adagrad(p, g, states[0], *common_args(cfg), lr, eps)

    got = run_reference(step, params, grads, [np.zeros(N)])
    for t, ((p_got, s_got), (p_exp, s_exp)) in enumerate(zip(got, expected), start=1):
        check(p_got, p_exp, f"params, step {t}")
        check(s_got[0], s_exp[0], f"state_sum, step {t}")


# ------------------------------------------------------------------ RMSprop

def rmsprop_loop(params, grads, cfg, lr, alpha, eps, momentum, centered):
    p = list(params)
    v = [0.0] * N
    ga = [0.0] * N
    buf = [0.0] * N
    out = []
    for graw in grads:
        for i in range(N):
            g = effective(graw[i], i, cfg, p[i])
            v[i] = alpha * v[i] + (1 - alpha) * g * g
            v_tilde = v[i]
            if centered:
                ga[i] = alpha * ga[i] + (1 - alpha) * g
                v_tilde = v_tilde - ga[i] ** 2
            denom = math.sqrt(v_tilde) + eps
            if momentum > 0:
                buf[i] = momentum * buf[i] + g / denom
                p[i] -= lr * buf[i]
            else:
                p[i] -= lr * g / denom
        out.append((list(p), [list(v), list(ga), list(buf)]))
    return out


RMSPROP_CASES = {
    "plain": (PLAIN, dict(alpha=0.9, eps=1e-8, momentum=0.0, centered=False)),
    "big_eps_decay": (DECAY, dict(alpha=0.99, eps=0.05, momentum=0.0, centered=False)),
    "centered": (PLAIN, dict(alpha=0.9, eps=1e-8, momentum=0.0, centered=True)),
    "momentum": (DECAY, dict(alpha=0.9, eps=1e-3, momentum=0.7, centered=False)),
    "centered_momentum_all": (ALL_ON, dict(alpha=0.8, eps=0.01, momentum=0.6, centered=True)),
}


@pytest.mark.parametrize("case", list(RMSPROP_CASES))
def test_rmsprop_trajectory(case):
    cfg, hyper = RMSPROP_CASES[case]
    lr = 0.01
    params, grads = data(3)
    assert_config_exercised(cfg, grads)
    expected = rmsprop_loop(params, grads, cfg, lr, **hyper)

    def step(p, g, states, t):
        ref.rmsprop(p, g, states[0], states[1], states[2], *common_args(cfg), lr, hyper["alpha"],
                    hyper["eps"], hyper["momentum"], hyper["centered"])

    got = run_reference(step, params, grads, [np.zeros(N), np.zeros(N), np.zeros(N)])
    for t, ((p_got, s_got), (p_exp, s_exp)) in enumerate(zip(got, expected), start=1):
        check(p_got, p_exp, f"params, step {t}")
        check(s_got[0], s_exp[0], f"square_avg, step {t}")
        if hyper["centered"]:
            check(s_got[1], s_exp[1], f"grad_avg, step {t}")
        if hyper["momentum"]:
            check(s_got[2], s_exp[2], f"momentum_buf, step {t}")


# ----------------------------------------------------------------- Adadelta

def adadelta_loop(params, grads, cfg, lr, rho, eps):
    p = list(params)
    v = [0.0] * N
    u = [0.0] * N
    out = []
    for graw in grads:
        for i in range(N):
            g = effective(graw[i], i, cfg, p[i])
            v[i] = rho * v[i] + (1 - rho) * g * g
            delta = math.sqrt(u[i] + eps) / math.sqrt(v[i] + eps) * g
            u[i] = rho * u[i] + (1 - rho) * delta * delta
            p[i] -= lr * delta
        out.append((list(p), [list(v), list(u)]))
    return out


# lr != 1 (torch's default) so a backend ignoring lr is caught
ADADELTA_CASES = {"plain": (PLAIN, dict(lr=1.0, rho=0.9, eps=1e-6)),
                  "decay_mask": (DECAY, dict(lr=0.5, rho=0.95, eps=1e-6)),
                  "all_big_eps": (ALL_ON, dict(lr=0.7, rho=0.9, eps=1e-2))}


@pytest.mark.parametrize("case", list(ADADELTA_CASES))
def test_adadelta_trajectory(case):
    cfg, hyper = ADADELTA_CASES[case]
    params, grads = data(4)
    assert_config_exercised(cfg, grads)
    expected = adadelta_loop(params, grads, cfg, **hyper)

    def step(p, g, states, t):
        ref.adadelta(p, g, states[0], states[1], *common_args(cfg), hyper["lr"], hyper["rho"], hyper["eps"])

    got = run_reference(step, params, grads, [np.zeros(N), np.zeros(N)])
    for t, ((p_got, s_got), (p_exp, s_exp)) in enumerate(zip(got, expected), start=1):
        check(p_got, p_exp, f"params, step {t}")
        check(s_got[0], s_exp[0], f"square_avg, step {t}")
        check(s_got[1], s_exp[1], f"acc_delta, step {t}")


# --------------------------------------------------------------- Adam / AdamW

def adam_loop(params, grads, cfg, lr, beta1, beta2, eps, decoupled, amsgrad):
    p = list(params)
    m = [0.0] * N
    v = [0.0] * N
    vmax = [0.0] * N
    out = []
    for t, graw in enumerate(grads, start=1):
        for i in range(N):
            s = SEG_OF[i]
            if decoupled:
                # AdamW: shrink the parameter, gradient carries no decay term
                p[i] *= 1 - lr * cfg["seg_decay"][s]
                g = effective(graw[i], i, dict(cfg, seg_decay=[0.0] * 3), p[i])
            else:
                g = effective(graw[i], i, cfg, p[i])
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1 ** t)
            if amsgrad:
                vmax[i] = max(vmax[i], v[i])
                v_hat = vmax[i] / (1 - beta2 ** t)
            else:
                v_hat = v[i] / (1 - beta2 ** t)
            p[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
        out.append((list(p), [list(m), list(v), list(vmax)]))
    return out


ADAM_CASES = {
    "plain": (PLAIN, dict(beta1=0.9, beta2=0.999, eps=1e-8, decoupled=False, amsgrad=False)),
    "big_eps": (PLAIN, dict(beta1=0.8, beta2=0.99, eps=0.05, decoupled=False, amsgrad=False)),
    "adam_decay_mask": (DECAY, dict(beta1=0.9, beta2=0.999, eps=1e-8, decoupled=False, amsgrad=False)),
    "adamw_decay_mask": (DECAY, dict(beta1=0.9, beta2=0.999, eps=1e-8, decoupled=True, amsgrad=False)),
    "amsgrad": (PLAIN, dict(beta1=0.9, beta2=0.9, eps=1e-8, decoupled=False, amsgrad=True)),
    "adam_amsgrad_all": (ALL_ON, dict(beta1=0.85, beta2=0.9, eps=1e-3, decoupled=False, amsgrad=True)),
    "adamw_amsgrad_all": (ALL_ON, dict(beta1=0.85, beta2=0.9, eps=1e-3, decoupled=True, amsgrad=True)),
}


@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adam_trajectory(case):
    cfg, hyper = ADAM_CASES[case]
    lr = 0.05
    params, grads = data(5)
    assert_config_exercised(cfg, grads)
    expected = adam_loop(params, grads, cfg, lr, **hyper)
    if hyper["amsgrad"]:
        # the running max must actually differ from v at the end for amsgrad to be tested
        _, (_, v_end, vmax_end) = expected[-1]
        assert any(a > b for a, b in zip(vmax_end, v_end))

    def step(p, g, states, t):
        ref.adam(p, g, states[0], states[1], states[2], *common_args(cfg), lr, hyper["beta1"],
                 hyper["beta2"], hyper["eps"], t, hyper["decoupled"], hyper["amsgrad"])

    got = run_reference(step, params, grads, [np.zeros(N), np.zeros(N), np.zeros(N)])
    for t, ((p_got, s_got), (p_exp, s_exp)) in enumerate(zip(got, expected), start=1):
        check(p_got, p_exp, f"params, step {t}")
        check(s_got[0], s_exp[0], f"exp_avg, step {t}")
        check(s_got[1], s_exp[1], f"exp_avg_sq, step {t}")
        if hyper["amsgrad"]:
            check(s_got[2], s_exp[2], f"max_exp_avg_sq, step {t}")


def test_adam_first_step_by_hand():
    """Step 1: m = (1-b1) g, v = (1-b2) g^2, so m / (1-b1) = g and v / (1-b2) = g^2:
    the update is lr * g / (|g| + eps) = lr * sign(g) * |g| / (|g| + eps).
    With lr = 0.1, eps = 1e-8:
      p = 1.0,  g = 0.5  -> 1.0 - 0.1 * 0.5 / 0.50000001 = 0.9  + 2e-9 (approx.)
      p = -2.0, g = -3.0 -> -2.0 + 0.1 * 3.0 / 3.00000001 = -1.9 - 3.3e-10
      p = 0.0,  g = 1e-3 -> -0.1 * 1e-3 / (1e-3 + 1e-8)  = -0.099999 (eps starts to show)
    and with eps = 0 the moves are exactly lr * sign(g)."""
    offsets = np.array([0, 3], dtype=np.int64)
    one = np.ones(1)
    zero = np.zeros(1)
    params = np.array([1.0, -2.0, 0.0])
    grads = np.array([0.5, -3.0, 1e-3])
    ref.adam(params, grads, np.zeros(3), np.zeros(3), np.zeros(3), offsets, one, zero, INF, None,
             spec.L1_GRADIENT, 0.1, 0.9, 0.999, 1e-8, 1, False, False)
    expected = [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 3.0 / (3.0 + 1e-8), -0.1 * 1e-3 / (1e-3 + 1e-8)]
    np.testing.assert_allclose(params, expected, rtol=1e-14)
    np.testing.assert_allclose(params, [0.9, -1.9, -0.1], atol=1e-6)  # the ~lr*sign(g) picture

    params = np.array([1.0, -2.0, 0.0])
    ref.adam(params, grads, np.zeros(3), np.zeros(3), np.zeros(3), offsets, one, zero, INF, None,
             spec.L1_GRADIENT, 0.1, 0.9, 0.999, 0.0, 1, False, False)
    # sqrt(0.001 g^2) / sqrt(0.001) rounds to |g| within an ulp or two
    np.testing.assert_allclose(params, [0.9, -1.9, -0.1], rtol=1e-15, atol=1e-16)


# -------------------------------------------------------------------- NAdam

def nadam_schedule(beta1, momentum_decay, t):
    """(mu_t, mu_{t+1}, prod_{k<=t} mu_k) as the caller is to compute them."""
    mu = lambda k: beta1 * (1 - 0.5 * 0.96 ** (k * momentum_decay))
    prod = 1.0
    for k in range(1, t + 1):
        prod *= mu(k)
    return mu(t), mu(t + 1), prod


def nadam_loop(params, grads, cfg, lr, beta1, beta2, eps, momentum_decay):
    """torch.optim.NAdam's documented update:
    m_hat = mu_{t+1} m_t / (1 - prod_{i<=t+1} mu_i) + (1 - mu_t) g_t / (1 - prod_{i<=t} mu_i)
    theta -= lr m_hat / (sqrt(v_t / (1 - beta2^t)) + eps)."""
    p = list(params)
    m = [0.0] * N
    v = [0.0] * N
    out = []
    mus = [None] + [beta1 * (1 - 0.5 * 0.96 ** (k * momentum_decay)) for k in range(1, N_STEPS + 2)]
    for t, graw in enumerate(grads, start=1):
        prod_t = math.prod(mus[1:t + 1])
        prod_next = math.prod(mus[1:t + 2])
        for i in range(N):
            g = effective(graw[i], i, cfg, p[i])
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = mus[t + 1] * m[i] / (1 - prod_next) + (1 - mus[t]) * g / (1 - prod_t)
            p[i] -= lr * m_hat / (math.sqrt(v[i] / (1 - beta2 ** t)) + eps)
        out.append((list(p), [list(m), list(v)]))
    return out


NADAM_CASES = {
    "plain": (PLAIN, dict(beta1=0.9, beta2=0.999, eps=1e-8, momentum_decay=4e-3)),
    "decay_mask_fast_schedule": (DECAY, dict(beta1=0.9, beta2=0.99, eps=1e-8, momentum_decay=0.5)),
    "all_big_eps": (ALL_ON, dict(beta1=0.8, beta2=0.95, eps=0.02, momentum_decay=4e-3)),
}


@pytest.mark.parametrize("case", list(NADAM_CASES))
def test_nadam_trajectory(case):
    cfg, hyper = NADAM_CASES[case]
    lr = 0.02
    params, grads = data(6)
    assert_config_exercised(cfg, grads)
    expected = nadam_loop(params, grads, cfg, lr, **hyper)

    def step(p, g, states, t):
        mu, mu_next, mu_product = nadam_schedule(hyper["beta1"], hyper["momentum_decay"], t)
        ref.nadam(p, g, states[0], states[1], *common_args(cfg), lr, hyper["beta1"], hyper["beta2"],
                  hyper["eps"], t, mu, mu_next, mu_product)

    got = run_reference(step, params, grads, [np.zeros(N), np.zeros(N)])
    for t, ((p_got, s_got), (p_exp, s_exp)) in enumerate(zip(got, expected), start=1):
        check(p_got, p_exp, f"params, step {t}")
        check(s_got[0], s_exp[0], f"exp_avg, step {t}")
        check(s_got[1], s_exp[1], f"exp_avg_sq, step {t}")


# --------------------------------------------------------------- grad norms

@pytest.mark.parametrize("clip_value", [INF, 0.9])
def test_grad_sq_norms(clip_value):
    rs = np.random.default_rng(7)
    offsets = np.array([0, 5, 5, 12, 20], dtype=np.int64)  # includes an empty segment
    grads = rs.normal(scale=1.5, size=20)
    if clip_value != INF:
        assert (np.abs(grads) > clip_value).any()
    out = np.full(4, np.nan)
    g_before = grads.copy()
    ref.grad_sq_norms(grads, offsets, clip_value, out)
    np.testing.assert_array_equal(grads, g_before)
    clipped = np.array([min(max(g, -clip_value), clip_value) for g in grads])
    expected = [np.linalg.norm(clipped[offsets[s]:offsets[s + 1]]) ** 2 for s in range(4)]
    assert expected[1] == 0.0
    # norm() then squaring vs a dot product: a few ulps apart
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=0)
    assert out.dtype == np.float64


def test_grad_sq_norms_float32_grads_accumulate_in_float64():
    """out is float64: summing float32 squares in float32 would lose ~1e-4 relative here."""
    rs = np.random.default_rng(8)
    n = 200_000
    grads = rs.normal(size=n).astype(np.float32)
    grads[0] = 300.0  # a large term first makes float32 accumulation visibly lossy
    offsets = np.array([0, n], dtype=np.int64)
    out = np.zeros(1)
    ref.grad_sq_norms(grads, offsets, INF, out)
    expected = math.fsum(float(g) ** 2 for g in grads)
    # float64 accumulation of 2e5 terms: error ~ n * 1e-16 relative at worst
    assert out[0] == pytest.approx(expected, rel=1e-10)
