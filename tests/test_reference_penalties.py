"""kernels.reference's penalties and constraints (kernels.spec): grad_sq_norms with L2 / L1,
the optimizers' L1 rules after the step, SGDW's decoupled decay and max_norm, against
scalar loops of their formulas, numbers worked by hand, and PyTorch where it has them."""
import math

import numpy as np
import pytest

import kernels.reference as ref
from kernels import spec

INF = math.inf
OFFSETS = np.array([0, 6, 9, 9, 15], dtype=np.int64)  # W, b, an empty segment, W
SEG_OF = np.repeat(np.arange(4), np.diff(OFFSETS))
L1 = np.array([0.05, 0.0, 0.0, 0.2])  # biases exempt: 0
L2 = np.array([0.3, 0.0, 0.0, 0.1])
NO_L1 = (None, spec.L1_GRADIENT)


def problem(seed=0):
    rs = np.random.default_rng(seed)
    params = rs.normal(size=15)
    params[[2, 10]] = 0.0  # sign(0) = 0: no L1 gradient, no L1 step
    return params, rs.normal(size=15)


def sign(x):
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


# ------------------------------------------------------------ penalty in the gradient
@pytest.mark.parametrize("l1_in_gradient", [True, False])
@pytest.mark.parametrize("clip_value", [INF, 0.8])
def test_penalty_gradient_norms_and_value_by_loop(l1_in_gradient, clip_value):
    params, grads = problem(1)
    expected_g = [grads[i] + L2[SEG_OF[i]] * params[i]
                  + (L1[SEG_OF[i]] * sign(params[i]) if l1_in_gradient else 0.0) for i in range(15)]
    expected_out = [sum(min(max(expected_g[i], -clip_value), clip_value) ** 2
                        for i in range(15) if SEG_OF[i] == s) for s in range(4)]
    # The l1 term counts in the value whether or not it is in the gradient.
    value = sum(L2[SEG_OF[i]] / 2 * params[i] ** 2 + L1[SEG_OF[i]] * abs(params[i]) for i in range(15))
    g, out, total = grads.copy(), np.full(4, -1.0), np.array([1.5])
    before = params.copy()
    ref.grad_sq_norms(g, OFFSETS, clip_value, out, None, params, L1, L2, l1_in_gradient, total)
    np.testing.assert_allclose(g, expected_g, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(out, expected_out, rtol=1e-13, atol=0)
    assert total[0] == pytest.approx(1.5 + value, rel=1e-14)
    np.testing.assert_array_equal(params, before)
    np.testing.assert_array_equal(g[6:9], grads[6:9])  # the exempt bias segment


def test_penalty_by_hand():
    """One weight segment [2, -1, 0], l2 = 0.5, l1 = 0.1, gradient [0.1, 0.2, 0.3]:
    g = [0.1 + 1 + 0.1, 0.2 - 0.5 - 0.1, 0.3 + 0 + 0] = [1.2, -0.4, 0.3];
    value = 0.25 * (4 + 1) + 0.1 * 3 = 1.55; out = 1.44 + 0.16 + 0.09 = 1.69."""
    g, out, total = np.array([0.1, 0.2, 0.3]), np.zeros(1), np.zeros(1)
    ref.grad_sq_norms(g, np.array([0, 3]), INF, out, None, np.array([2.0, -1.0, 0.0]),
                      np.array([0.1]), np.array([0.5]), True, total)
    np.testing.assert_allclose(g, [1.2, -0.4, 0.3], rtol=1e-15)
    assert out[0] == pytest.approx(1.69, rel=1e-15) and total[0] == pytest.approx(1.55, rel=1e-15)


def test_penalty_against_torch_autograd():
    """The value and gradient of l2 / 2 ||W||^2 + l1 ||W||_1 as torch's autograd finds them
    (torch's abs has gradient sign(w), 0 at 0, as the spec's)."""
    torch = pytest.importorskip("torch")
    params, grads = problem(2)
    w = torch.tensor(params, requires_grad=True)
    l1 = torch.tensor(np.repeat(L1, np.diff(OFFSETS)))
    l2 = torch.tensor(np.repeat(L2, np.diff(OFFSETS)))
    value = (l2 / 2 * w * w + l1 * w.abs()).sum()
    value.backward()
    g, out, total = grads.copy(), np.zeros(4), np.zeros(1)
    ref.grad_sq_norms(g, OFFSETS, INF, out, None, params, L1, L2, True, total)
    np.testing.assert_allclose(g - grads, w.grad.numpy(), rtol=1e-14, atol=1e-16)
    assert total[0] == pytest.approx(value.item(), rel=1e-14)


def test_l2_in_the_gradient_is_torch_weight_decay_on_the_weights():
    """SGD with momentum on g + l2 W (the penalty's gradient, weights only) is torch SGD
    with weight_decay = l2 in a parameter group of the weights, 0 for the biases."""
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(3)
    W0, b0 = rs.normal(size=(3, 4)), rs.normal(size=4)
    steps = [(rs.normal(size=(3, 4)), rs.normal(size=4)) for _ in range(3)]
    W, b = torch.tensor(W0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    opt = torch.optim.SGD([{"params": [W], "weight_decay": 0.2}, {"params": [b], "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9)
    offsets = np.array([0, 12, 16])
    params, buf = np.concatenate([W0.ravel(), b0]), np.zeros(16)
    for t, (gW, gb) in enumerate(steps, start=1):
        W.grad, b.grad = torch.tensor(gW), torch.tensor(gb)
        opt.step()
        g = np.concatenate([gW.ravel(), gb])
        ref.grad_sq_norms(g, offsets, INF, np.zeros(2), None, params, np.zeros(2), np.array([0.2, 0.0]))
        ref.sgd(params, g, buf, offsets, np.ones(2), np.zeros(2), INF, *NO_L1, 0.1, 0.9, 0.0, False, False,
                t == 1)
    np.testing.assert_allclose(params, np.concatenate([W.detach().numpy().ravel(), b.detach().numpy()]),
                               rtol=1e-14, atol=1e-15)


# --------------------------------------------------------------- L1 after the step
def sgd_l1_loop(params, grads, lr, rule):
    """Plain SGD then the rule, element by element (kernels.spec's formulas)."""
    p = list(params)
    for i in range(len(p)):
        old, t = p[i], lr * L1[SEG_OF[i]]
        new = old - lr * grads[i]
        if rule == spec.L1_CLIPPED:
            new -= min(t, abs(old)) * sign(old)
        elif rule == spec.L1_PROXIMAL:
            new = sign(new) * max(abs(new) - t, 0.0)
        p[i] = new
    return p


@pytest.mark.parametrize("rule", [spec.L1_GRADIENT, spec.L1_CLIPPED, spec.L1_PROXIMAL])
def test_l1_rules_by_loop(rule):
    params, grads = problem(4)
    grads *= 0.1
    lr = 0.5
    expected = sgd_l1_loop(params, grads, lr, rule)
    p = params.copy()
    ref.sgd(p, grads, None, OFFSETS, np.ones(4), np.zeros(4), INF, L1, rule, lr, 0.0, 0.0, False, False,
            True)
    np.testing.assert_allclose(p, expected, rtol=1e-15, atol=1e-16)


def test_l1_rules_by_hand():
    """lr = 1, l1 = 0.3, zero loss gradient: the clipped rule moves 0.2 to 0 (min(0.3, 0.2)),
    -1 to -0.7, and leaves 0 at 0; proximal likewise here. With a gradient that moves
    0.2 to 0.5 first, clipped subtracts min(0.3, |0.2|) = 0.2 (the old value bounds it):
    0.3, while proximal shrinks the stepped 0.5 by 0.3: 0.2."""
    offsets, l1 = np.array([0, 3]), np.array([0.3])
    for rule in (spec.L1_CLIPPED, spec.L1_PROXIMAL):
        p = np.array([0.2, -1.0, 0.0])
        ref.sgd(p, np.zeros(3), None, offsets, np.ones(1), np.zeros(1), INF, l1, rule, 1.0, 0.0, 0.0, False,
                False, True)
        np.testing.assert_allclose(p, [0.0, -0.7, 0.0], atol=1e-16)
    expected = {spec.L1_CLIPPED: 0.3, spec.L1_PROXIMAL: 0.2}
    for rule, value in expected.items():
        p = np.array([0.2])
        ref.sgd(p, np.array([-0.3]), None, np.array([0, 1]), np.ones(1), np.zeros(1), INF, l1, rule, 1.0, 0.0,
                0.0, False, False, True)
        assert p[0] == pytest.approx(value, abs=1e-15)


def test_clipped_rule_never_crosses_zero_and_proximal_makes_zeros():
    """With a zero loss gradient, the clipped rule stops weights at zero and never past;
    both rules zero weights within lr l1 of zero; the clipped rule zeroes only weights
    whose loss gradient leaves them near zero (here all: the gradient is 0)."""
    rs = np.random.default_rng(5)
    params = rs.normal(scale=0.1, size=200)
    offsets, l1 = np.array([0, 200]), np.array([0.02])
    for rule in (spec.L1_CLIPPED, spec.L1_PROXIMAL):
        p = params.copy()
        for _ in range(10):
            before = p.copy()
            ref.sgd(p, np.zeros(200), None, offsets, np.ones(1), np.zeros(1), INF, l1, rule, 0.5, 0.0, 0.0,
                    False, False, True)
            assert (np.sign(p) * np.sign(before) >= 0).all()
        np.testing.assert_array_equal(p == 0, np.abs(params) <= 0.1 + 1e-12)


def test_l1_rule_with_every_optimizer_is_the_step_then_the_rule():
    """Each optimizer with a rule equals the optimizer without it followed by the rule on
    the stepped values (w_old the values before)."""
    params, grads = problem(6)
    common = (OFFSETS, np.full(4, 0.9), np.array([0.1, 0.0, 0.0, 0.05]), 1.0)
    ops = {
        "sgd": (lambda p, r, *st: ref.sgd(p, grads, st[0], *common, L1, r, 0.1, 0.9, 0.0, True, False, True), 1),
        "adagrad": (lambda p, r, *st: ref.adagrad(p, grads, st[0], *common, L1, r, 0.1, 1e-10), 1),
        "rmsprop": (lambda p, r, *st: ref.rmsprop(p, grads, *st, *common, L1, r, 0.01, 0.9, 1e-8, 0.5, True), 3),
        "adadelta": (lambda p, r, *st: ref.adadelta(p, grads, *st, *common, L1, r, 0.7, 0.9, 1e-6), 2),
        "adamw": (lambda p, r, *st: ref.adam(p, grads, *st, *common, L1, r, 0.05, 0.9, 0.99, 1e-8, 1, True,
                                             True), 3),
        "nadam": (lambda p, r, *st: ref.nadam(p, grads, *st, *common, L1, r, 0.02, 0.9, 0.99, 1e-8, 1, 0.85,
                                              0.86, 0.85), 2),
    }
    for name, (op, states) in ops.items():
        stepped = params.copy()
        op(stepped, spec.L1_GRADIENT, *[np.zeros(15) for _ in range(states)])
        t = np.repeat(0.0 + L1, np.diff(OFFSETS)) * {"sgd": 0.1, "adagrad": 0.1, "rmsprop": 0.01,
                                                     "adadelta": 0.7, "adamw": 0.05, "nadam": 0.02}[name]
        rules = {spec.L1_CLIPPED: stepped - np.minimum(t, np.abs(params)) * np.sign(params),
                 spec.L1_PROXIMAL: np.sign(stepped) * np.maximum(np.abs(stepped) - t, 0)}
        for rule, expected in rules.items():
            p = params.copy()
            op(p, rule, *[np.zeros(15) for _ in range(states)])
            np.testing.assert_allclose(p, expected, rtol=1e-15, atol=1e-17, err_msg=f"{name} {rule}")


def test_l1_rule_in_diag_and_skip():
    params, grads = problem(7)
    p, diag = params.copy(), np.zeros((4, 2))
    ref.sgd(p, grads, None, OFFSETS, np.ones(4), np.zeros(4), INF, L1, spec.L1_PROXIMAL, 0.5, 0.0, 0.0, False,
            False, True, None, diag)
    change = p - params
    np.testing.assert_allclose(diag[:, 0], [change[SEG_OF == s] @ change[SEG_OF == s] for s in range(4)],
                               rtol=1e-14)
    skipped = params.copy()
    ref.sgd(skipped, grads, None, OFFSETS, np.ones(4), np.zeros(4), INF, L1, spec.L1_CLIPPED, 0.5, 0.0, 0.0,
            False, False, True, np.array([0.0, 0.0, 1.0]))
    np.testing.assert_array_equal(skipped, params)


def test_unknown_l1_rule_is_refused_before_anything_changes():
    params, grads = problem(8)
    p = params.copy()
    with pytest.raises(ValueError, match="l1_rule"):
        ref.sgd(p, grads, None, OFFSETS, np.ones(4), np.zeros(4), INF, L1, 3, 0.5, 0.0, 0.0, False, False, True)
    np.testing.assert_array_equal(p, params)


# ------------------------------------------------------------------------- SGDW
def test_sgdw_by_hand():
    """p = 2, g = 0.5, lr = 0.1, wd = 0.1: p = 2 (1 - 0.01) - 0.1 * 0.5 = 1.93; coupled SGD
    would give 2 - 0.1 (0.5 + 0.2) = 1.93 too at the first step without momentum, so with
    momentum 0.9 over two steps (g = 0.5 then 1.0): SGDW p1 = 1.93, buf = 0.5;
    p2 = 1.93 * 0.99 - 0.1 (0.9 * 0.5 + 1.0) = 1.9107 - 0.145 = 1.7657."""
    p, buf = np.array([2.0]), np.zeros(1)
    args = (np.array([0, 1]), np.ones(1), np.array([0.1]), INF, *NO_L1, 0.1, 0.9, 0.0, False, True)
    ref.sgd(p, np.array([0.5]), buf, *args, True)
    assert p[0] == pytest.approx(1.93, abs=1e-15)
    ref.sgd(p, np.array([1.0]), buf, *args, False)
    assert p[0] == pytest.approx(1.7657, abs=1e-14)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgdw_against_torch_with_manual_decay(nesterov):
    """torch's SGD decays coupled; SGDW is p.mul_(1 - lr wd) then torch SGD without decay."""
    torch = pytest.importorskip("torch")
    params, _ = problem(9)
    rs = np.random.default_rng(10)
    steps = [rs.normal(size=15) for _ in range(4)]
    decay = np.array([0.2, 0.0, 0.0, 0.05])
    w = torch.tensor(params)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.8, nesterov=nesterov)
    per_element = torch.tensor(np.repeat(decay, np.diff(OFFSETS)))
    p, buf = params.copy(), np.zeros(15)
    for t, g in enumerate(steps, start=1):
        with torch.no_grad():
            w.mul_(1 - 0.1 * per_element)
        w.grad = torch.tensor(g)
        opt.step()
        ref.sgd(p, g, buf, OFFSETS, np.ones(4), decay, INF, *NO_L1, 0.1, 0.8, 0.0, nesterov, True, t == 1)
    np.testing.assert_allclose(p, w.numpy(), rtol=1e-14, atol=1e-15)


# --------------------------------------------------------------------- max_norm
def test_max_norm_by_keras_formula():
    rs = np.random.default_rng(11)
    W = rs.normal(size=(5, 6)) * np.array([0.01, 0.5, 1.0, 3.0, 10.0, 0.0])
    expected = W.copy()
    for j in range(6):
        norm = math.sqrt(sum(W[i, j] ** 2 for i in range(5)))
        expected[:, j] = W[:, j] * min(norm, 2.0) / (1e-7 + norm)
    got = W.copy()
    ref.max_norm(got, 2.0)
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)
    norms = np.linalg.norm(got, axis=0)
    assert (norms <= 2.0).all() and (norms[3:5] == pytest.approx(2.0, rel=1e-7))
    assert (got[:, 5] == 0).all()


def test_max_norm_by_hand_and_skip():
    """Column [3, 4] has norm 5: with c = 1 it becomes [3, 4] / (5 + 1e-7) (norm 1 - 2e-8);
    column [0.3, 0.4] (norm 0.5) is scaled by 0.5 / (0.5 + 1e-7), Keras' tiny shrink."""
    W = np.array([[3.0, 0.3], [4.0, 0.4]])
    got = W.copy()
    ref.max_norm(got, 1.0)
    np.testing.assert_allclose(got, [[3 / (5 + 1e-7), 0.3 * 0.5 / (0.5 + 1e-7)],
                                     [4 / (5 + 1e-7), 0.4 * 0.5 / (0.5 + 1e-7)]], rtol=1e-15)
    skipped = W.copy()
    ref.max_norm(skipped, 1.0, np.array([0.0, 0.0, 1.0]))
    np.testing.assert_array_equal(skipped, W)


def test_max_norm_float32_scales_in_float64():
    W = np.random.default_rng(12).normal(size=(300, 4)).astype(np.float32)
    got = W.copy()
    ref.max_norm(got, 1.0)
    w = W.astype(np.float64)
    norms = np.sqrt((w * w).sum(axis=0))
    np.testing.assert_array_equal(got, (w * (np.minimum(norms, 1.0) / (1e-7 + norms))).astype(np.float32))
