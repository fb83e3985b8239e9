"""The fast backends' penalties and constraints against kernels.reference: grad_sq_norms
with L2 / L1 (the gradient written in place, the norms, the penalty's value), every
optimizer with each L1 rule after the step (and SGDW), the skip flag, runs of trained
segments (slices of the flat buffers, as frozen layers make), and max_norm on awkward
shapes. Every array goes through to_device / to_host."""
import math

import numpy as np
import pytest

from conftest import TOLERANCES
from kernels import spec
from test_kernels_dense import parallel_cpu  # noqa: F401  (a fixture)
from test_kernels_optim import (CLIPS, LAYOUTS, NO_L1, OPTIMIZERS, assert_history_close, flat_problem,
                                run_steps)

RULES = {"clipped": spec.L1_CLIPPED, "proximal": spec.L1_PROXIMAL}


def coefficients(sizes, scale):
    """Per segment: ``scale`` times 1, 2, 3, ... on even segments (weights), 0 on odd ones
    (biases, exempt)."""
    return np.array([scale * (s + 1) if s % 2 == 0 else 0.0 for s in range(len(sizes))])


def penalized_norms(backend, sizes, dtype, clip_value, l1_in_gradient, seed=3, prior=0.75):
    """(grads after, out, total) of grad_sq_norms with a penalty, on host arrays."""
    params, grads, offsets, _, _ = flat_problem(sizes, dtype, seed)
    params[3::7] = 0  # sign(0) = 0
    g = backend.to_device(grads[0], dtype)
    out = backend.to_device(np.full(len(sizes), -1.0), np.float64)
    total = backend.to_device(np.array([prior]), np.float64)
    backend.grad_sq_norms(g, backend.to_device(offsets, np.int64), clip_value, out, None,
                          backend.to_device(params, dtype),
                          backend.to_device(coefficients(sizes, 0.01), np.float64),
                          backend.to_device(coefficients(sizes, 0.1), np.float64), l1_in_gradient, total)
    return backend.to_host(g).copy(), backend.to_host(out).copy(), backend.to_host(total).copy()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("l1_in_gradient", [True, False], ids=["l1_in_gradient", "l1_after"])
def test_grad_sq_norms_with_penalty(fast, ref, dtype, layout, clip, l1_in_gradient):
    got = penalized_norms(fast, LAYOUTS[layout], dtype, CLIPS[clip], l1_in_gradient)
    expected = penalized_norms(ref, LAYOUTS[layout], dtype, CLIPS[clip], l1_in_gradient)
    np.testing.assert_allclose(got[0], expected[0], **TOLERANCES[dtype])
    # Sums in float64 of float32 values, the gradients a few float32 roundings apart.
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[1], expected[1], rtol=rtol, atol=0)
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-12, atol=0)  # from params alone
    assert expected[2][0] > 0.75  # the penalty added something
    plain = flat_problem(LAYOUTS[layout], dtype, 3)[1][0]
    assert not np.array_equal(expected[0], plain)


def test_grad_sq_norms_penalty_without_total(fast, ref):
    """total None: the gradient and norms as with it, nothing else written."""
    sizes, dtype = LAYOUTS["odd"], np.float64
    params, grads, offsets, _, _ = flat_problem(sizes, dtype, 4)
    results = []
    for backend in (fast, ref):
        g = backend.to_device(grads[0].copy(), dtype)  # the CPU's to_device copies nothing
        out = backend.to_device(np.zeros(3), np.float64)
        backend.grad_sq_norms(g, backend.to_device(offsets, np.int64), math.inf, out,
                              params=backend.to_device(params, dtype),
                              seg_l1=backend.to_device(coefficients(sizes, 0.01), np.float64),
                              seg_l2=backend.to_device(coefficients(sizes, 0.1), np.float64))
        results.append((backend.to_host(g), backend.to_host(out)))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rule", RULES)
def test_optimizer_with_l1_rule(fast, ref, dtype, name, layout, rule):
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    # l1 large enough against lr that the rules change many elements (adam moves ~lr).
    l1 = (coefficients(LAYOUTS[layout], 0.5), RULES[rule])
    args = (op, LAYOUTS[layout], dtype, CLIPS["clip"], state_names, hyper, per_step)
    got = run_steps(fast, *args, l1=l1)
    expected = run_steps(ref, *args, l1=l1)
    assert_history_close(got, expected, dtype, f"{name} {layout} {rule}")
    without = run_steps(ref, *args)
    assert not np.array_equal(expected[-1]["params"], without[-1]["params"])


@pytest.mark.parametrize("rule", RULES)
def test_l1_rule_skipped_and_refused(fast, rule):
    """A skipped step changes nothing with a rule either; an unknown rule is a ValueError
    raised before anything changes."""
    sizes, dtype = LAYOUTS["odd"], np.float32
    params, grads, offsets, seg_scale, seg_decay = flat_problem(sizes, dtype, 5)
    p = fast.to_device(params.copy(), dtype)
    segments = [fast.to_device(a, a.dtype) for a in (offsets, seg_scale, seg_decay)]
    seg_l1 = fast.to_device(coefficients(sizes, 0.5), np.float64)
    status = fast.to_device(np.array([0.0, 0.0, 1.0]), np.float64)
    fast.sgd(p, fast.to_device(grads[0], dtype), None, *segments, 0.5, seg_l1, RULES[rule], 0.1, 0.0, 0.0,
             False, False, True, status)
    np.testing.assert_array_equal(fast.to_host(p), params)
    with pytest.raises(ValueError, match="l1_rule"):
        fast.sgd(p, fast.to_device(grads[0], dtype), None, *segments, 0.5, seg_l1, 7, 0.1, 0.0, 0.0, False,
                 False, True)
    np.testing.assert_array_equal(fast.to_host(p), params)


@pytest.mark.parametrize("rule", RULES)
def test_l1_rule_on_a_run_of_trained_segments(fast, ref, rule):
    """As Optimizer.apply updates a run of trained segments past frozen ones: slices of the
    flat buffers, offsets counted from the run's start, seg_l1 sliced alike. Elements
    outside the run stay as they were."""
    sizes, dtype = [40, 8, 300, 20, 17], np.float64
    params, grads, offsets, seg_scale, seg_decay = flat_problem(sizes, dtype, 6)
    first, last = 2, 5  # segments 2..4 trained
    e = slice(offsets[first], offsets[last])
    run_offsets = offsets[first:last + 1] - offsets[first]
    seg_l1 = coefficients(sizes, 0.3)
    results = []
    for backend in (fast, ref):
        p = backend.to_device(params.copy(), dtype)
        buf = backend.to_device(np.zeros(params.size), dtype)
        backend.sgd(p[e], backend.to_device(grads[0], dtype)[e], buf[e], backend.to_device(run_offsets, np.int64),
                    backend.to_device(seg_scale[first:last], np.float64),
                    backend.to_device(seg_decay[first:last], np.float64), math.inf,
                    backend.to_device(seg_l1[first:last], np.float64), RULES[rule], 0.1, 0.9, 0.0, False, True,
                    True)
        results.append(backend.to_host(p).copy())
    np.testing.assert_allclose(results[0], results[1], **TOLERANCES[dtype])
    np.testing.assert_array_equal(results[0][:offsets[first]], params[:offsets[first]])
    assert not np.array_equal(results[0][e], params[e])


@pytest.mark.parametrize("name", ["sgd_nesterov", "sgdw", "adamw_amsgrad"])
def test_parallel_kernels_with_penalties(parallel_cpu, ref, name):
    """The CPU's parallel kernels with the rules and penalty: against the reference, and
    the same bits as the serial kernels."""
    from conftest import load_backend

    dtype, layout = np.float32, LAYOUTS["model"]
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    args = (op, layout, dtype, CLIPS["clip"], state_names, hyper, per_step)
    l1 = (coefficients(layout, 0.5), spec.L1_PROXIMAL)
    got = run_steps(parallel_cpu, *args, l1=l1)
    assert_history_close(got, run_steps(ref, *args, l1=l1), dtype, name)
    parallel = penalized_norms(parallel_cpu, layout, dtype, 0.5, True)
    serial = penalized_norms(load_backend("cpu"), layout, dtype, 0.5, True)
    for a, b in zip(parallel, serial):
        np.testing.assert_array_equal(a, b)


MAX_NORM_SHAPES = {"square": (64, 64), "tall": (3000, 3), "wide": (2, 700), "one": (1, 1),
                   "odd": (37, 33), "parallel": (600, 250)}


@pytest.mark.parametrize("shape", MAX_NORM_SHAPES)
@pytest.mark.parametrize("c", [0.5, 3.0])
def test_max_norm(fast, ref, dtype, shape, c):
    rows, cols = MAX_NORM_SHAPES[shape]
    rs = np.random.default_rng(rows * cols)
    W = (rs.standard_normal((rows, cols)) * rs.uniform(0.0, 4.0 / math.sqrt(rows), cols)).astype(dtype)
    W[:, 0] = 0.0  # a zero column stays zero
    got = fast.to_device(W.copy(), dtype)  # the CPU's to_device copies nothing
    fast.max_norm(got, c)
    expected = W.copy()
    ref.max_norm(expected, c)
    np.testing.assert_allclose(fast.to_host(got), expected, **TOLERANCES[dtype])
    assert (np.linalg.norm(expected.astype(np.float64), axis=0) <= c * (1 + 1e-6)).all()


def test_max_norm_skip_and_views(fast, ref):
    """A skipped step changes nothing; W as a view of a flat buffer (as the model keeps its
    weights) is rescaled in place."""
    dtype = np.float64
    flat = np.random.default_rng(13).standard_normal(5 + 40 * 30)
    buffer = fast.to_device(flat.copy(), dtype)  # the CPU's to_device copies nothing
    W = buffer[5:].reshape(40, 30)
    fast.max_norm(W, 1.0, fast.to_device(np.array([0.0, 0.0, 1.0]), np.float64))
    np.testing.assert_array_equal(fast.to_host(buffer), flat)
    fast.max_norm(W, 1.0, fast.to_device(np.zeros(3), np.float64))
    expected = flat[5:].reshape(40, 30).copy()
    ref.max_norm(expected, 1.0)
    got = fast.to_host(buffer)
    np.testing.assert_allclose(got[5:].reshape(40, 30), expected, **TOLERANCES[dtype])
    np.testing.assert_array_equal(got[:5], flat[:5])


def test_max_norm_parallel_kernel_is_the_serial(parallel_cpu):
    from conftest import load_backend
    from kernels.cpu import constraints

    W = np.random.default_rng(14).standard_normal((300, 500)).astype(np.float32)
    a, b = W.copy(), W.copy()
    constraints._MAX_NORM[1](a, 1.0, np.empty(500))
    load_backend("cpu").max_norm(b, 1.0)  # serial: below the parallel threshold
    np.testing.assert_array_equal(a, b)
