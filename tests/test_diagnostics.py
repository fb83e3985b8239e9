"""``fit(..., diagnostics=True)`` and what the kernels compute for it (kernels.spec):
dense_forward's ``alive`` flags, the optimizers' ``diag`` sums, grad_sq_norms' ``acc``.

Ops run on every backend through its own arrays (``to_device`` / ``to_host``): the fast
ones against kernels.reference, and every one, the reference included, against the
formula computed here by hand from its own parameters before and after each update.
Diagnostics must change nothing else: parameters and state are compared bit for bit with
the same steps without them. The CUDA update's diagnostics path also runs without a device,
through the host build of its math (the fixtures of test_cuda_host_optim). End to end: the
values fit logs, by hand from the weights, and the update ratio on the digits at a good and
at bad learning rates.
"""
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import engine
import kernels.reference as reference
from conftest import load_backend
from kernels import spec
from kernels.rng import dropout_key
from test_cuda_host_optim import (HOST_LAYOUTS, SMALL_LAYOUTS, assert_argument_types,  # noqa: F401
                                  host, lib, optim, run_norms, signatures)
from test_kernels_dense import parallel_cpu  # noqa: F401  (a fixture)
from test_kernels_optim import (CLIPS, LAYOUTS, NO_L1, OPTIMIZERS, STEPS, assert_history_close,
                                flat_problem, run_steps)

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = [pytest.param("reference"), pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """kernels.reference or a fast backend (skipped where it cannot run)."""
    return load_backend(request.param)


# ------------------------------------------------------------- dense_forward's alive
# Activations whose sign is the sign of z (prelu with positive slopes): for them
# act(Z) > 0 exactly where Z > 0, the formula checked by hand below.
SIGN_ACTIVATIONS = [spec.IDENTITY, spec.RELU, spec.LEAKY_RELU, spec.ELU, spec.SELU, spec.GELU,
                    spec.GELU_TANH, spec.SILU, spec.TANH, spec.PRELU]
# (batch, fan_in, fan_out): a single unit, odd sizes, one row, more units than a vector.
ALIVE_SHAPES = [(1, 1, 1), (7, 13, 5), (33, 5, 17), (1, 40, 3), (64, 24, 130)]


def exact_layer(shape, seed=0):
    """X, W, b, slope (float64 host arrays) whose pre-activations every backend computes
    exactly, in float32 too, and never near 0: small integers in X and W, b an integer and
    a half. Every third unit gets a bias below -sum |X| |W| (dead on every row), the next a
    bias above it (alive on every row), the others whatever their rows give."""
    n, fan_in, fan_out = shape
    g = np.random.default_rng(seed)
    X = g.integers(-2, 3, (n, fan_in)).astype(np.float64)
    W = g.integers(-1, 2, (fan_in, fan_out)).astype(np.float64)
    b = g.integers(-3, 2, fan_out) + 0.5
    reach = 2.0 * fan_in + 0.5
    b[0::3], b[1::3] = -reach, reach
    return X, W, b, g.uniform(0.05, 0.5, fan_out)


def forward_alive(backend, shape, dtype, act, alive, rows, p, in_place, strided=False):
    """dense_forward of rows ``rows`` of exact_layer(shape) on ``backend`` with ``alive``;
    returns Z and Y on the host."""
    X, W, b, slope = exact_layer(shape)
    X = X[rows]
    if strided:  # a column slice of a wider array: rows not adjacent
        X = backend.to_device(np.pad(X, ((0, 0), (3, 4))), dtype)[:, 3:3 + shape[1]]
    else:
        X = backend.to_device(X, dtype)
    n, m = X.shape[0], shape[2]
    Z = backend.zeros((n, m), dtype)
    Y = Z if in_place else backend.zeros((n, m), dtype)
    backend.dense_forward(X, backend.to_device(W, dtype), backend.to_device(b, dtype), act, 0.2,
                          backend.to_device(slope, dtype) if act == spec.PRELU else None, p,
                          dropout_key(5, 1, 0), Z, Y, alive)
    return backend.to_host(Z).copy(), backend.to_host(Y).copy()


def fired_by_hand(shape):
    """Per unit, whether Z = X @ W + b of exact_layer(shape) is positive on some row."""
    X, W, b, _ = exact_layer(shape)
    return ((X @ W + b) > 0).any(axis=0)


@pytest.mark.parametrize("act", SIGN_ACTIVATIONS)
@pytest.mark.parametrize("shape", ALIVE_SHAPES, ids=str)
def test_alive_flags_by_hand(backend, dtype, act, shape):
    """Two batches OR'ed into flags that start with a dead unit already set: the flags are
    the units positive on some row (before dropout, which the second batch applies) or set
    before; Z and Y are bit for bit those of the same call without flags."""
    n, _, m = shape
    prior = np.zeros(m, np.uint8)
    prior[0] = 1  # a unit dead in these rows but alive before: it stays alive
    alive = backend.to_device(prior, np.uint8)
    batches = [(slice(0, n // 2), 0.0, True), (slice(n // 2, n), 0.5, False)] if n > 1 else \
        [(slice(0, n), 0.5, False)]
    for rows, p, in_place in batches:
        with_flags = forward_alive(backend, shape, dtype, act, alive, rows, p, in_place)
        without = forward_alive(backend, shape, dtype, act, None, rows, p, in_place)
        for got, expected, name in zip(with_flags, without, "ZY"):
            np.testing.assert_array_equal(got, expected, err_msg=f"{name} changed by the flags")
    got = backend.to_host(alive)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, prior | fired_by_hand(shape))
    if m > 3:  # a unit dead on every row and one alive on some are both there to find
        assert got.min() == 0 and got.max() == 1


@pytest.mark.parametrize("act", [spec.RELU, spec.SIGMOID, spec.SOFTPLUS])
def test_alive_flags_against_the_reference(fast, dtype, act):
    """Any activation, on random values: the flags of act(Z) > 0 equal the reference's
    (sigmoid and softplus: every unit whose values stay above the underflow)."""
    X, W, b, slope = (a.astype(dtype) for a in exact_layer((40, 9, 70), seed=3))
    X = X / 4  # leave the integers: z of either sign, unit by unit
    results = []
    for backend in (fast, reference):
        alive = backend.to_device(np.zeros(70), np.uint8)
        Z = backend.zeros((40, 70), dtype)
        backend.dense_forward(backend.to_device(X, dtype), backend.to_device(W, dtype),
                              backend.to_device(b, dtype), act, 0.0, None, 0.0, 0, Z, Z, alive)
        results.append(backend.to_host(alive))
    np.testing.assert_array_equal(*results)
    assert results[1].any()


def test_alive_flags_into_a_view(backend):
    """Flags given as a strided view are written there and nowhere else; X a column slice."""
    shape = (33, 5, 17)
    base = backend.to_device(np.full(2 * 17, 7), np.uint8)
    view = base[::2]
    backend.copy_into(view, np.zeros(17, np.uint8))
    forward_alive(backend, shape, np.float32, spec.RELU, view, slice(None), 0.0, False, strided=True)
    got = backend.to_host(base)
    np.testing.assert_array_equal(got[::2], fired_by_hand(shape).astype(np.uint8))
    assert (got[1::2] == 7).all()


def test_alive_flags_parallel_kernel(parallel_cpu):
    """The CPU's parallel (prange) forward, whose rows run on several threads, each storing
    1 into the flags of its positive elements."""
    shape = (64, 24, 130)
    alive = np.zeros(130, np.uint8)
    forward_alive(parallel_cpu, shape, np.float32, spec.RELU, alive, slice(None), 0.0, False)
    np.testing.assert_array_equal(alive, fired_by_hand(shape))


# -------------------------------------------------------------- the optimizers' diag
PREFILL = 0.25  # diag adds to what it holds


def run_with_diag(backend, name, sizes, dtype, status=None):
    """The parameters before each of STEPS updates of optimizer ``name`` and after the last
    (host arrays, (STEPS + 1, n)), and the (S, 2) diag they added to (PREFILL at first)."""
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    params, grads, offsets, seg_scale, seg_decay = flat_problem(sizes, dtype, seed=0)
    p = backend.to_device(params, dtype)
    state = [backend.to_device(np.zeros(params.size), dtype) for _ in state_names]
    segments = [backend.to_device(a, a.dtype) for a in (offsets, seg_scale, seg_decay)]
    diag = backend.to_device(np.full((len(sizes), 2), PREFILL), np.float64)
    history = [backend.to_host(p).copy()]
    for step in range(1, STEPS + 1):
        getattr(backend, op)(p, backend.to_device(grads[step - 1], dtype), *state, *segments,
                             CLIPS["clip"], *hyper, *per_step(step), status=status, diag=diag)
        history.append(backend.to_host(p).copy())
    return np.array(history), backend.to_host(diag).copy(), offsets


def diag_by_hand(history, offsets):
    """PREFILL + per segment sum over updates of (p' - p)^2 and of p^2, in float64 from the
    dtype's values: the formula of kernels.spec's diag."""
    values = history.astype(np.float64)
    change, before = np.diff(values, axis=0), values[:-1]
    return PREFILL + np.array([[np.sum(change[:, a:b] ** 2), np.sum(before[:, a:b] ** 2)]
                               for a, b in zip(offsets[:-1], offsets[1:])])


def assert_diag_by_hand(history, diag, offsets, what):
    # Sums of float64 squares: the same terms, added in another order.
    np.testing.assert_allclose(diag, diag_by_hand(history, offsets), rtol=1e-10, atol=0, err_msg=what)


def assert_diag_near(got, expected, got_history, expected_history, offsets, what):
    """Two backends' diag, at the distance their parameters allow: each column is the
    squared norm of a vector made of all updates' (p' - p) or p, so by the triangle
    inequality the square roots differ by at most the norm of the difference of those
    vectors, computed here from both backends' parameters (plus float64 rounding, the
    square roots being taken of sums that hold PREFILL too)."""
    a, b = got_history.astype(np.float64), expected_history.astype(np.float64)
    vectors = [(np.diff(a, axis=0), np.diff(b, axis=0)), (a[:-1], b[:-1])]
    for column, (x, y) in enumerate(vectors):
        for s, (start, stop) in enumerate(zip(offsets[:-1], offsets[1:])):
            bound = math.sqrt(np.sum((x[:, start:stop] - y[:, start:stop]) ** 2))
            a, b = math.sqrt(got[s, column] - PREFILL), math.sqrt(expected[s, column] - PREFILL)
            assert abs(a - b) <= bound * (1 + 1e-9) + 1e-9 * max(a, b, PREFILL), \
                f"{what}: segment {s}, column {column}"


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_update_diag(backend, dtype, name, layout):
    """diag by hand from the backend's own parameters; the update itself as without diag
    (bit for bit but on the CPU, see below); the fast backends' diag against the
    reference's."""
    sizes = LAYOUTS[layout]
    history, diag, offsets = run_with_diag(backend, name, sizes, dtype)
    assert_diag_by_hand(history, diag, offsets, f"{name} {layout}")
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    plain = [step["params"] for step in
             run_steps(backend, op, sizes, dtype, CLIPS["clip"], state_names, hyper, per_step)]
    if backend.name == "numba":
        # The kernel with diag is compiled on its own, and LLVM contracts a * b + c into an
        # fma (fastmath, kernels.cpu.jit) where it chooses in each: an element may round 1 ulp
        # apart (measured up to 3e-7 relative in float32), well within the tolerances.
        assert_history_close([{"params": p} for p in history[1:]], [{"params": p} for p in plain],
                             dtype, f"{name} {layout} with diag")
    else:
        np.testing.assert_array_equal(history[1:], plain)
    if backend is not reference:
        expected_history, expected, _ = run_with_diag(reference, name, sizes, dtype)
        assert_diag_near(diag, expected, history, expected_history, offsets, f"{name} {layout}")
    assert (diag[np.diff(offsets) > 0] > PREFILL).all()  # every update moved every segment


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_update_diag_parallel_kernel(parallel_cpu, name):
    """The CPU's parallel update, whose blocks sum into slots added in block order: the same
    sums in the same order as the serial kernel, so the same bits."""
    serial = run_with_diag(load_backend("cpu"), name, LAYOUTS["model"], np.float32)
    history, diag, offsets = run_with_diag(parallel_cpu, name, LAYOUTS["model"], np.float32)
    assert_diag_by_hand(history, diag, offsets, name)
    np.testing.assert_array_equal(diag, serial[1])


def test_update_diag_parallel_kernel_after_an_undiagnosed_one(tmp_path):
    """In a fresh process and cache: the parallel AdamW update without diag, then with it,
    in float32 and then float64 (each a compilation more of one kernel). numba 0.68
    miscompiled a prange loop reading a scalar assigned only under a condition before it
    (the update's slot stride, once set under ``if diag is not None``): from the second
    compilation in a process on, every segment's sums came out as the sum over all
    segments, in the process and in the disk cache. Checked to fail with that stride."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import kernels.cpu as k
        from kernels.cpu import optim
        sys.path.insert(0, "tests")
        from test_kernels_optim import LAYOUTS, flat_problem

        def diag_of(parallel, dtype, diagnosed=True):
            optim.PARALLEL_MIN_WORK = 0 if parallel else 1 << 60
            params, grads, offsets, seg_scale, seg_decay = flat_problem(LAYOUTS["model"], dtype, seed=0)
            m, v = np.zeros_like(params), np.zeros_like(params)
            diag = np.zeros((len(offsets) - 1, 2)) if diagnosed else None
            k.adam(params, grads[0], m, v, None, offsets, seg_scale, seg_decay, 0.5, None, 0, 1e-2, 0.9, 0.999,
                   1e-8, 1, True, False, diag=diag)
            return diag

        diag_of(True, np.float32, diagnosed=False)
        for dtype in (np.float32, np.float64):
            print(np.array_equal(diag_of(True, dtype), diag_of(False, dtype)))
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


def test_sgd_update_ratio_is_lr_times_the_gradient_norm(backend, dtype):
    """Plain SGD moves p by -lr g: ||dp|| / ||p|| = lr ||g|| / ||p|| per segment."""
    lr, sizes = 0.1, [70, 5, 0, 33]
    params, grads, offsets, _, _ = flat_problem(sizes, dtype, seed=9)
    diag = backend.to_device(np.zeros((len(sizes), 2)), np.float64)
    backend.sgd(backend.to_device(params.copy(), dtype), backend.to_device(grads[0], dtype), None,
                backend.to_device(offsets, np.int64), backend.to_device(np.ones(4), np.float64),
                backend.to_device(np.zeros(4), np.float64), math.inf, *NO_L1, lr, 0.0, 0.0, False,
                False, True, diag=diag)
    diag = backend.to_host(diag)
    p, g = params.astype(np.float64), grads[0].astype(np.float64)
    pieces = [slice(a, b) for a, b in zip(offsets[:-1], offsets[1:])]
    np.testing.assert_allclose(diag[:, 1], [p[s] @ p[s] for s in pieces], rtol=1e-12)
    # p' - p is -lr g up to the rounding of p' (relative to p): float32's 2^-24 |p| against
    # a step lr |g| about 10 times smaller.
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(np.sqrt(diag[:, 0]), [lr * math.sqrt(g[s] @ g[s]) for s in pieces],
                               rtol=rtol)
    assert diag[2].tolist() == [0.0, 0.0]  # the empty segment


@pytest.mark.parametrize("name", ["sgd_momentum", "adagrad", "rmsprop", "adadelta", "adamw", "nadam"])
@pytest.mark.parametrize("skip", [1.0, math.nan])
def test_skipped_update_adds_nothing(backend, name, skip):
    status = backend.to_device(np.array([0.0, 0.0, skip]), np.float64)
    history, diag, _ = run_with_diag(backend, name, LAYOUTS["odd"], np.float32, status=status)
    assert (diag == PREFILL).all()
    assert (history == history[0]).all()


def test_update_diag_into_a_view(backend):
    """diag as rows of a larger array (not contiguous): written there and nowhere else."""
    params, grads, offsets, seg_scale, seg_decay = flat_problem(LAYOUTS["odd"], np.float64, seed=4)
    base = backend.to_device(np.full((6, 2), -1.0), np.float64)
    view = base[::2]
    backend.copy_into(view, np.zeros((3, 2)))
    p = backend.to_device(params.copy(), np.float64)  # the CPU's to_device copies nothing
    backend.adagrad(p, backend.to_device(grads[0], np.float64),
                    backend.to_device(np.zeros(params.size), np.float64),
                    *(backend.to_device(a, a.dtype) for a in (offsets, seg_scale, seg_decay)),
                    math.inf, *NO_L1, 0.05, 1e-10, diag=view)
    got = backend.to_host(base)
    history = np.array([params, backend.to_host(p)])
    np.testing.assert_allclose(got[::2], diag_by_hand(history, offsets) - PREFILL, rtol=1e-12)
    assert (got[1::2] == -1.0).all()


# -------------------------------------------------------------- grad_sq_norms' acc
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("clip", CLIPS)
def test_grad_sq_norms_acc(backend, dtype, layout, clip):
    """acc[s] += out[s]: the same addition as here, on out as the op wrote it."""
    _, grads, offsets, _, _ = flat_problem(LAYOUTS[layout], dtype, seed=2)
    prior = np.linspace(0.5, 2.0, len(offsets) - 1)
    out = backend.to_device(np.full(len(offsets) - 1, -1.0), np.float64)
    acc = backend.to_device(prior.copy(), np.float64)  # to_device may return the array itself
    for g in grads[:2]:
        backend.grad_sq_norms(backend.to_device(g, dtype), backend.to_device(offsets, np.int64),
                              CLIPS[clip], out, acc)
        prior = prior + backend.to_host(out)
    np.testing.assert_array_equal(backend.to_host(acc), prior)
    expected = np.empty(len(offsets) - 1)
    reference.grad_sq_norms(grads[1], offsets, CLIPS[clip], expected)
    np.testing.assert_allclose(backend.to_host(out), expected, rtol=1e-12, atol=0)


# ------------------------------------------------ the CUDA update without a device
@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("layout", SMALL_LAYOUTS)
@pytest.mark.parametrize("chunk", [None, 1, 5])
def test_cuda_host_update_diag(host, dtype, name, layout, chunk):
    """kernels.cuda's update with diag, its kernel and update_tally_totals run by the host
    build of optim_math.cuh: blocks of ``chunk`` elements (None: the norms' layout; 1 puts a
    block edge at every segment boundary) of several threads each."""
    host.launcher.chunk = chunk
    sizes = HOST_LAYOUTS[layout]
    history, diag, offsets = run_with_diag(host, name, sizes, dtype)
    assert_diag_by_hand(history, diag, offsets, f"{name} {layout}")
    expected_history, expected, _ = run_with_diag(reference, name, sizes, dtype)
    assert_diag_near(diag, expected, history, expected_history, offsets, f"{name} {layout}")
    host.launcher.chunk = None
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    plain = run_steps(host, op, sizes, dtype, CLIPS["clip"], state_names, hyper, per_step)
    np.testing.assert_array_equal(history[1:], [step["params"] for step in plain])


@pytest.mark.parametrize("skip", [1.0, math.nan])
def test_cuda_host_skipped_update_adds_nothing(host, skip):
    host.launcher.chunk = 3
    status = np.array([0.0, 0.0, skip])
    history, diag, _ = run_with_diag(host, "adamw", HOST_LAYOUTS["empty_ends"], np.float32, status)
    assert (diag == PREFILL).all() and (history == history[0]).all()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_cuda_update_diag_argument_types(host, signatures, dtype, name):
    """The diagnostics path's arguments have the C types of the kernels' parameters."""
    run_with_diag(host, name, HOST_LAYOUTS["odd"], dtype, status=np.zeros(spec.GUARD_SIZE))
    kernels = {kernel for kernel, _ in host.launcher.launches}
    assert "update_tally_totals" in kernels and len(kernels) == 2
    for kernel, args in host.launcher.launches:
        assert_argument_types(signatures[kernel], args, kernel)


def test_cuda_host_grad_sq_norms_acc(optim, lib, signatures, dtype):
    _, grads, offsets, _, _ = flat_problem(HOST_LAYOUTS["empty_ends"], dtype, seed=2)
    acc = np.linspace(1.0, 2.0, offsets.size - 1)
    prior = acc.copy()
    out, (_, total_args) = run_norms(optim, lib, grads[0], offsets, 0.5, 3, acc)
    np.testing.assert_array_equal(acc, prior + out)
    assert_argument_types(signatures["sq_norm_totals"], total_args, "sq_norm_totals")


# ------------------------------------------------------------------------ fit
def digits():
    from engine.demo import load_digits_splits

    return load_digits_splits(0)[0]


def fit_digits(backend_name, lr, epochs=2):
    X, y = digits()
    model = engine.MLP([64, 64, 32, 10], seed=0, backend=backend_name)
    trainer = engine.Trainer(model, optimizer=engine.AdamW(lr=lr))
    return trainer.fit(X, y, epochs=epochs, batch_size=32, verbose=0, diagnostics=True).history


def test_update_ratio_on_the_digits(backend_name):
    """AdamW at its default lr updates about a thousandth of the weights per step; at 1e-6
    a thousand times less, at 1.0 far more (the first epoch, before ReLU units die)."""
    good = fit_digits(backend_name, 1e-3)
    for i in (1, 2):
        assert all(1e-4 <= r <= 1e-2 for r in good[f"update_ratio/{i}"]), good[f"update_ratio/{i}"]
        assert all(r < 1e-5 for r in fit_digits(backend_name, 1e-6)[f"update_ratio/{i}"])
        assert fit_digits(backend_name, 1.0, epochs=1)[f"update_ratio/{i}"][0] > 3e-2
        assert all(g > 0 for g in good[f"grad_norm/{i}"])
        assert all(0.0 <= d < 0.5 for d in good[f"dead/{i}"])


def test_logged_values_by_hand(backend_name):
    """SGD without momentum or decay moves W by -lr g, so from the weights after every
    step: grad_norm = sqrt(mean_t ||dW_t||^2) / lr and update_ratio =
    sqrt(sum_t ||dW_t||^2 / sum_t ||W_(t-1)||^2); dead from the rows by hand at lr 0."""
    X, y = digits()
    X, y = X[:100], y[:100]
    lr = 0.05
    model = engine.MLP([64, 16, 12, 10], activation=["relu", "tanh"], seed=1, backend=backend_name,
                       dtype="float64")
    weights = [model.get_weights()]
    keep = engine.LambdaCallback(on_batch_end=lambda batch, logs: weights.append(model.get_weights()))
    trainer = engine.Trainer(model, optimizer=engine.SGD(lr=lr), callbacks=[keep])
    history = trainer.fit(X, y, epochs=2, batch_size=32, verbose=0, diagnostics=True).history
    assert sorted(k for k in history if "/" in k) == ["dead/1", "grad_norm/1", "grad_norm/2",
                                                      "update_ratio/1", "update_ratio/2"]
    for epoch, steps in enumerate([weights[:5], weights[4:]]):  # 4 steps an epoch
        for i, w in ((1, 0), (2, 2)):  # W of hidden layers 1 and 2 in get_weights order
            change = sum(np.sum((b[w] - a[w]) ** 2) for a, b in zip(steps[:-1], steps[1:]))
            size = sum(np.sum(a[w] ** 2) for a in steps[:-1])
            assert history[f"grad_norm/{i}"][epoch] == pytest.approx(math.sqrt(change / 4) / lr, rel=1e-9)
            assert history[f"update_ratio/{i}"][epoch] == pytest.approx(math.sqrt(change / size), rel=1e-9)
    # Units made dead by their biases, the weights kept by lr 0: the fraction by hand.
    W1, b1, *rest = model.get_weights()
    b1[:5] = -1e3
    model.set_weights([W1, b1, *rest])
    trainer = engine.Trainer(model, optimizer=engine.SGD(lr=0.0))
    dead = trainer.fit(X, y, epochs=1, batch_size=32, verbose=0, diagnostics=True).history["dead/1"]
    by_hand = np.mean(~(X @ W1 + b1 > 0).any(axis=0))
    assert dead == [by_hand] and by_hand >= 5 / 16


def test_diagnostics_change_nothing_else(backend_name):
    """The same losses and weights with and without diagnostics (on numba to rounding: see
    test_update_diag); without, no key of theirs."""
    X, y = digits()
    runs = []
    for diagnostics in (False, True):
        model = engine.MLP([64, 32, 10], dropout=0.2, seed=3, backend=backend_name)
        history = engine.Trainer(model, optimizer="adamw").fit(X[:300], y[:300], epochs=2, batch_size=64,
                                                               verbose=0, diagnostics=diagnostics).history
        runs.append((history, model.get_weights()))
    (plain, plain_weights), (diagnosed, diagnosed_weights) = runs
    assert not [name for name in plain if "/" in name]
    diagnosed = {name: values for name, values in diagnosed.items() if "/" not in name}
    assert diagnosed.keys() == plain.keys()
    tolerance = dict(rtol=1e-5, atol=1e-6) if backend_name == "numba" else dict(rtol=0, atol=0)
    for name, values in plain.items():
        np.testing.assert_allclose(diagnosed[name], values, err_msg=name, **tolerance)
    for a, b in zip(plain_weights, diagnosed_weights):
        np.testing.assert_allclose(b, a, **tolerance)


def test_callbacks_may_monitor_diagnostics(backend_name):
    X, y = digits()
    trainer = engine.Trainer(engine.MLP([64, 8, 10], seed=0, backend=backend_name))
    stop = engine.EarlyStopping("update_ratio/1", patience=0, mode="min")
    trainer.fit(X[:64], y[:64], epochs=2, verbose=0, diagnostics=True, callbacks=[stop])
    with pytest.raises(ValueError, match="update_ratio/1"):
        trainer.fit(X[:64], y[:64], epochs=1, verbose=0, callbacks=[stop])
    with pytest.raises(TypeError, match="diagnostics"):
        trainer.fit(X[:64], y[:64], epochs=1, verbose=0, diagnostics=1)


def test_progress_bar_shows_the_mean_update_ratio(capsys):
    X, y = digits()
    trainer = engine.Trainer(engine.MLP([64, 8, 8, 10], seed=0, backend="numpy"))
    history = trainer.fit(X[:64], y[:64], epochs=1, verbose=1, diagnostics=True).history
    mean = (history["update_ratio/1"][0] + history["update_ratio/2"][0]) / 2
    out = capsys.readouterr().out
    assert f"update_ratio={mean:.1e}" in out and "grad_norm" not in out


def test_reads_the_device_at_epoch_ends_only(backend_name, monkeypatch):
    """Diagnostics add two reads an epoch (the sums, the flags), none per step."""
    X, y = digits()
    trainer = engine.Trainer(engine.MLP([64, 8, 10], seed=0, backend=backend_name))
    k = trainer.model._k
    reads = []
    original = k.to_host
    monkeypatch.setattr(k, "to_host", lambda array: reads.append(1) or original(array))
    trainer.fit(X[:100], y[:100], epochs=2, batch_size=10, verbose=0)
    plain, reads[:] = len(reads), []
    trainer.fit(X[:100], y[:100], epochs=2, batch_size=10, verbose=0, diagnostics=True)
    assert len(reads) == plain + 2 * 2
