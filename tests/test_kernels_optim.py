"""Optimizer updates and gradient norms of the fast backends against kernels.reference.

Each optimizer runs a few steps from the same state on both backends; parameters and
every state buffer must agree after each step, and ``grads`` must stay untouched. Every
array a backend reads or writes (offsets and segment scales included) is one of its own,
made by ``to_device``; results are compared on the host.
"""
import math

import numpy as np
import pytest

from conftest import TOLERANCES
from kernels import spec
from test_kernels_dense import parallel_cpu  # noqa: F401  (a fixture)

# Segment sizes: a large weight spanning several parallel blocks (the CPU backend's
# blocks are 16384 elements), tiny biases, an empty segment, one starting mid-block.
LAYOUTS = {
    "model": [70, 5, 16384 * 2 + 3, 1, 0, 300, 16384 - 7, 9],
    "single": [1],
    "odd": [7, 13, 33],
}
CLIPS = {"no_clip": math.inf, "clip": 0.5}
STEPS = 3


def flat_problem(sizes, dtype, seed):
    """params, a gradient per step, offsets, seg_scale and seg_decay for ``sizes``."""
    g = np.random.default_rng(seed)
    n = sum(sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    params = g.standard_normal(n).astype(dtype)
    grads = [g.standard_normal(n).astype(dtype) * 2 for _ in range(STEPS)]
    seg_scale = g.uniform(0.3, 1.0, len(sizes))
    seg_scale[0] = 1.0
    seg_decay = np.where(np.arange(len(sizes)) % 2 == 0, 0.05, 0.0)  # biases exempt
    return params, grads, offsets, seg_scale, seg_decay


def state_buffers(backend, n, dtype, names, fill=0.0):
    return {name: backend.to_device(np.full(n, fill), dtype) for name in names}


def run_steps(backend, op, sizes, dtype, clip_value, state_names, hyper, per_step, seed=0, l1=None):
    """params and state after each of STEPS steps of ``op``; checks grads stay untouched.
    ``l1``: None, or the (seg_l1 host array, l1_rule) that replace hyper's NO_L1."""
    params, grads, *segments = flat_problem(sizes, dtype, seed)
    offsets, seg_scale, seg_decay = (backend.to_device(a, a.dtype) for a in segments)
    params = backend.to_device(params, dtype)
    if l1 is not None:
        assert hyper[:2] == NO_L1
        hyper = (backend.to_device(l1[0], np.float64), l1[1], *hyper[2:])
    state = state_buffers(backend, params.size, dtype, state_names)
    history = []
    for step in range(1, STEPS + 1):
        g = backend.to_device(grads[step - 1], dtype)
        before = backend.to_host(g).copy()
        getattr(backend, op)(params, g, *state.values(), offsets, seg_scale, seg_decay, clip_value,
                             *hyper, *per_step(step))
        np.testing.assert_array_equal(backend.to_host(g), before, err_msg="grads was written")
        history.append({"params": backend.to_host(params).copy(),
                        **{k: backend.to_host(v).copy() for k, v in state.items()}})
    return history


def assert_history_close(got, expected, dtype, what):
    """TOLERANCES, with the absolute part in units of the buffer's typical magnitude.

    Tolerance differs from TOLERANCES on purpose: a state buffer can be far from unit
    scale (an rmsprop momentum buffer accumulates g / sqrt(v) ~ 10 per step), and where
    its terms of alternating sign cancel, an element ends near 0 with the rounding
    error of those terms (measured: 2.4e-6 on a float32 element of 0.011 whose terms are
    ~10). The absolute tolerance is therefore TOLERANCES' atol times the median
    magnitude of the buffer when that exceeds 1.
    """
    tol = TOLERANCES[dtype]
    for step, (a, b) in enumerate(zip(got, expected), start=1):
        for name in b:
            unit = max(1.0, float(np.median(np.abs(b[name]))))
            np.testing.assert_allclose(a[name], b[name], rtol=tol["rtol"], atol=tol["atol"] * unit,
                                       err_msg=f"{what}, step {step}: {name}")


def no_step_args(step):
    return ()


# What every optimizer takes after clip_value before its hyperparameters: seg_l1 and
# l1_rule, here no L1 rule after the step (run_steps' ``l1`` replaces them).
NO_L1 = (None, spec.L1_GRADIENT)

# name: (op, state buffers, arguments after clip_value, per-step arguments)
OPTIMIZERS = {
    "sgd": ("sgd", ["momentum_buf"], (*NO_L1, 0.1, 0.0, 0.0, False, False), lambda s: (s == 1,)),
    "sgd_momentum": ("sgd", ["momentum_buf"], (*NO_L1, 0.1, 0.9, 0.0, False, False), lambda s: (s == 1,)),
    "sgd_dampening": ("sgd", ["momentum_buf"], (*NO_L1, 0.1, 0.9, 0.3, False, False), lambda s: (s == 1,)),
    "sgd_nesterov": ("sgd", ["momentum_buf"], (*NO_L1, 0.1, 0.9, 0.0, True, False), lambda s: (s == 1,)),
    "sgdw": ("sgd", ["momentum_buf"], (*NO_L1, 0.1, 0.0, 0.0, False, True), lambda s: (s == 1,)),
    "sgdw_nesterov": ("sgd", ["momentum_buf"], (*NO_L1, 0.1, 0.9, 0.0, True, True), lambda s: (s == 1,)),
    "adagrad": ("adagrad", ["state_sum"], (*NO_L1, 0.05, 1e-10), no_step_args),
    "rmsprop": ("rmsprop", ["square_avg", "grad_avg", "momentum_buf"],
                (*NO_L1, 0.01, 0.99, 1e-8, 0.0, False), no_step_args),
    "rmsprop_centered": ("rmsprop", ["square_avg", "grad_avg", "momentum_buf"],
                         (*NO_L1, 0.01, 0.9, 1e-8, 0.0, True), no_step_args),
    "rmsprop_momentum": ("rmsprop", ["square_avg", "grad_avg", "momentum_buf"],
                         (*NO_L1, 0.01, 0.99, 1e-8, 0.9, False), no_step_args),
    "rmsprop_centered_momentum": ("rmsprop", ["square_avg", "grad_avg", "momentum_buf"],
                                  (*NO_L1, 0.01, 0.9, 1e-8, 0.5, True), no_step_args),
    "adadelta": ("adadelta", ["square_avg", "acc_delta"], (*NO_L1, 1.0, 0.9, 1e-6), no_step_args),
}
for decoupled in (False, True):
    for amsgrad in (False, True):
        OPTIMIZERS[f"adam{'w' if decoupled else ''}{'_amsgrad' if amsgrad else ''}"] = (
            "adam", ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"], (*NO_L1, 1e-3, 0.9, 0.999, 1e-8),
            lambda s, d=decoupled, a=amsgrad: (s, d, a))


def nadam_schedule(step, beta1=0.9, momentum_decay=4e-3):
    """(step, mu, mu_next, mu_product) as torch's NAdam computes them."""
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    mu_product = math.prod(beta1 * (1.0 - 0.5 * 0.96 ** (k * momentum_decay))
                           for k in range(1, step + 1))
    return step, mu, mu_next, mu_product


OPTIMIZERS["nadam"] = ("nadam", ["exp_avg", "exp_avg_sq"], (*NO_L1, 2e-3, 0.9, 0.999, 1e-8), nadam_schedule)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("clip", CLIPS)
def test_optimizer(fast, ref, dtype, name, layout, clip):
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    args = (op, LAYOUTS[layout], dtype, CLIPS[clip], state_names, hyper, per_step)
    got = run_steps(fast, *args)
    expected = run_steps(ref, *args)
    assert_history_close(got, expected, dtype, f"{name} {layout} {clip}")
    # The update moved the parameters (a test that compares nothing would pass too).
    params0 = flat_problem(LAYOUTS[layout], dtype, 0)[0]
    assert not np.array_equal(got[-1]["params"], params0)


def test_optimizer_propagates_non_finite(fast):
    params, grads, offsets, seg_scale, seg_decay = flat_problem([10, 3], np.float32, seed=1)
    g = grads[0]
    g[2], g[11] = np.nan, np.inf
    params, g, offsets, seg_scale, seg_decay = (fast.to_device(a, a.dtype) for a in
                                                (params, g, offsets, seg_scale, seg_decay))
    m, v = fast.zeros(params.shape, np.float32), fast.zeros(params.shape, np.float32)
    fast.adam(params, g, m, v, None, offsets, seg_scale, seg_decay, math.inf, *NO_L1, 1e-3, 0.9,
              0.999, 1e-8, 1, True, False)
    params = fast.to_host(params)
    assert np.isnan(params[2]) and not np.isfinite(params[11])
    assert np.isfinite(np.delete(params, [2, 11])).all()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("clip", CLIPS)
def test_grad_sq_norms(fast, ref, dtype, layout, clip):
    _, grads, offsets, _, _ = flat_problem(LAYOUTS[layout], dtype, seed=2)
    # Both outputs start at -1, so that an element the op leaves unwritten shows.
    got = fast.to_device(np.full(len(offsets) - 1, -1.0), np.float64)
    expected = np.full(len(offsets) - 1, -1.0)
    fast.grad_sq_norms(fast.to_device(grads[0], dtype), fast.to_device(offsets, np.int64),
                       CLIPS[clip], got)
    ref.grad_sq_norms(grads[0], offsets, CLIPS[clip], expected)
    # Sums of float64 squares of float32 values: both are exact to float64 rounding.
    np.testing.assert_allclose(fast.to_host(got), expected, rtol=1e-12, atol=0)
    assert (expected[np.diff(offsets) > 0] > 0).all()


@pytest.mark.parametrize("name", ["sgd_nesterov", "adamw_amsgrad"])
def test_parallel_kernels(parallel_cpu, ref, name):
    """The parallel (prange) update and norm kernels against the reference, on the
    layout of several blocks; float32 only, as in test_kernels_dense.test_parallel_kernels
    (CPU-only, on host arrays)."""
    dtype = np.float32
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    args = (op, LAYOUTS["model"], dtype, CLIPS["clip"], state_names, hyper, per_step)
    assert_history_close(run_steps(parallel_cpu, *args), run_steps(ref, *args), dtype, name)
    _, grads, offsets, _, _ = flat_problem(LAYOUTS["model"], dtype, seed=2)
    got, expected = np.zeros(len(offsets) - 1), np.zeros(len(offsets) - 1)
    parallel_cpu.grad_sq_norms(grads[0], offsets, 0.5, got)
    ref.grad_sq_norms(grads[0], offsets, 0.5, expected)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)  # as test_grad_sq_norms


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel", ["serial", "parallel"])
def test_all_finite(kernel, dtype):
    """kernels.cpu's check of a gradient buffer (compiled steps run it before the norms)
    against np.isfinite(...).all(): one element, odd sizes, several parallel blocks, a
    strided view, and an inf, -inf or NaN anywhere (first, last, mid-vector), or a finite
    value at the dtype's largest. CPU-only: an internal kernel, not a spec op."""
    pytest.importorskip("numba")
    from kernels.cpu.optim import _ALL_FINITE

    check = _ALL_FINITE[kernel == "parallel"]
    rng = np.random.default_rng(4)
    for n in (1, 7, 33, 16384 * 2 + 5):
        values = rng.standard_normal(n).astype(dtype)
        assert check(values) is True
        for view in (values[::2], values[1::3]):
            assert check(view) == bool(np.isfinite(view).all())
        for position in sorted({0, n // 2, n - 1}):
            for bad in (np.inf, -np.inf, np.nan, np.finfo(dtype).max):
                spoiled = values.copy()
                spoiled[position] = bad
                assert check(spoiled) == bool(np.isfinite(spoiled).all()), (n, position, bad)
