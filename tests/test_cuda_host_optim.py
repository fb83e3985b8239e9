"""The optimizers and gradient norms of the CUDA backend without a device: the math of
kernels/cuda/optim_math.cuh built as host C++ (tests/cuda_host.py) and driven by
kernels.cuda.optim's own ops, against kernels.reference.

The ops compute their constants and the argument list of their kernel
(``_update_args``, ``_norm_args``); here the launch is replaced by the entry points of
tests/cuda_host_optim.cpp, which take that same argument list and run the kernel's body
thread after thread. So all but the device itself is exercised: the constants and their
rounding to the dtype, the state slots each optimizer uses, the segment walk, the groups
of 16 bytes and their scalar tail, the skip flag, the norm partials' slots. The argument
types are checked against the kernels' signatures as NVRTC compiles them.
"""
import ctypes
import importlib
import math
import shutil
import subprocess
import types

import numpy as np
import pytest

import cuda_host
import kernels.reference as reference
from kernels import spec
from test_kernels_optim import (CLIPS, LAYOUTS, OPTIMIZERS, assert_history_close, flat_problem,
                                run_steps)

# The shared layouts, and empty segments at both ends and in a row; an empty buffer.
HOST_LAYOUTS = {**LAYOUTS, "empty_ends": [0, 3, 0, 0, 5, 1, 6, 0], "empty_buffer": [0, 0]}
# The small ones: the large "model" (50,000 elements, 30x their cost to compare at a
# tolerance) is compared bit for bit instead, in test_update_rounds_as_the_reference.
SMALL_LAYOUTS = [name for name in HOST_LAYOUTS if name != "model"]

# (emulated threads, buffers aligned to 16 bytes): float4/double2 groups and their tail
# split over a few threads, or one element at a time from a base one element off.
VARIANTS = {"aligned_3_threads": (3, True), "unaligned_2_threads": (2, False)}

SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
C_SCALARS = {np.float32: ctypes.c_float, np.float64: ctypes.c_double, np.int32: ctypes.c_int,
             np.int64: ctypes.c_longlong}
C_TYPES = {np.float32: "float", np.float64: "double", np.int32: "int", np.int64: "long long"}


@pytest.fixture(scope="module")
def optim():
    """kernels.cuda.optim (importing it needs CuPy, not a device)."""
    try:
        return importlib.import_module("kernels.cuda.optim")
    except ImportError as error:
        if isinstance(error, ModuleNotFoundError) and (error.name or "").startswith("kernels"):
            raise
        pytest.skip(f"kernels.cuda cannot be imported here: {error}")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return cuda_host.build("cuda_host_optim.cpp", tmp_path_factory)


def c_argument(value):
    """A kernel argument as ctypes passes it to the host entry point of the same C type."""
    if value is None:
        return ctypes.c_void_p(None)
    if isinstance(value, np.ndarray):
        return cuda_host.pointer(value)
    return C_SCALARS[type(value)](value)


def placed_copy(values, dtype, aligned):
    """A copy of ``values`` (its shape) starting on 64 bytes, or one element past (never 16-byte
    aligned)."""
    values = np.asarray(values)
    itemsize = np.dtype(dtype).itemsize
    room = np.empty(values.size + 128 // itemsize, dtype=dtype)
    start = (-room.ctypes.data % 64) // itemsize + (0 if aligned else 1)
    out = room[start:start + values.size].reshape(values.shape)
    out[...] = values
    return out


class HostLauncher:
    """Stands in for kernels.cuda.optim._update: the op's kernel arguments, run by the host
    entry point of that kernel as ``threads`` threads; records every launch.

    With ``diag`` (kernels.spec's update diagnostics), as _update launches it: the kernel
    over the blocks of ``chunk`` elements (None: the layout of optim._norm_layout), each
    block as ``threads`` threads, its partials given NaN first so that a slot read but never
    written shows; then update_tally_totals into ``diag``."""

    def __init__(self, optim, lib, threads, aligned, chunk=None):
        self.optim, self.lib, self.threads, self.aligned = optim, lib, threads, aligned
        self.chunk = chunk
        self.launches = []

    def __call__(self, kernel, params, grads, states, offsets, seg_scale, seg_decay, clip_value,
                 l1, status, floats, flags, diag=None):
        buffers = [params, grads] + [None if slot is None else slot[1] for slot in states]
        if params.size:  # an empty array has no address to speak of
            assert all(b.ctypes.data % 16 == 0 for b in buffers if b is not None) == self.aligned
        if diag is None:
            partials, chunk = None, 0
        else:
            n, segments = params.size, offsets.size - 1
            chunk = self.chunk or self.optim._norm_layout(n)[0]
            partials = np.full(2 * (-(-n // chunk) + segments), np.nan)
        args = self.optim._update_args(params, grads, buffers[2:], offsets, seg_scale, seg_decay,
                                       clip_value, self.optim._l1_rule(*l1), status, floats,
                                       flags, self.aligned, partials, chunk)
        self.launches.append((f"{kernel}<{C_TYPES[params.dtype.type]}>", args))
        if diag is not None and params.size == 0:
            return  # as _update: nothing to launch
        getattr(self.lib, f"{kernel}_{SUFFIX[params.dtype]}")(
            ctypes.c_longlong(self.threads), *map(c_argument, args))
        if diag is not None:
            tally_args = self.optim._tally_args(partials, offsets, params.size, chunk, status, diag)
            self.launches.append(("update_tally_totals", tally_args))
            self.lib.update_tally_totals(*map(c_argument, tally_args))


@pytest.fixture(params=VARIANTS)
def host(request, optim, lib, monkeypatch):
    """A backend namespace: kernels.cuda.optim's ops on NumPy arrays, launched on the host."""
    threads, aligned = VARIANTS[request.param]
    launcher = HostLauncher(optim, lib, threads, aligned)
    monkeypatch.setattr(optim, "_update", launcher)
    ops = {name: getattr(optim, name) for name in ("sgd", "adagrad", "rmsprop", "adadelta",
                                                    "adam", "nadam")}
    return types.SimpleNamespace(to_device=lambda a, dtype: placed_copy(a, dtype, aligned),
                                 to_host=lambda a: a, launcher=launcher, **ops)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("layout", SMALL_LAYOUTS)
@pytest.mark.parametrize("clip", CLIPS)
def test_update_matches_reference(host, dtype, name, layout, clip):
    """Parameters and every state buffer after each of a few steps, at the tolerances of
    the fast backends (tests/test_kernels_optim.py)."""
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    args = (op, HOST_LAYOUTS[layout], dtype, CLIPS[clip], state_names, hyper, per_step)
    got = run_steps(host, *args)
    if sum(HOST_LAYOUTS[layout]) == 0:  # the kernel ran over nothing and wrote nothing
        assert all(buffer.size == 0 for step in got for buffer in step.values())
        return
    assert_history_close(got, run_steps(reference, *args), dtype, f"{name} {layout} {clip}")
    params0 = flat_problem(HOST_LAYOUTS[layout], dtype, 0)[0]
    assert not np.array_equal(got[-1]["params"], params0)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_update_rounds_as_the_reference(host, dtype, name):
    """Bit for bit: every product is rounded on its own (mul in optim_math.cuh, as NumPy
    does), division and sqrt are correctly rounded, and the constants are rounded to the
    dtype from the same doubles, so nothing is left to differ."""
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    args = (op, HOST_LAYOUTS["model"], dtype, CLIPS["clip"], state_names, hyper, per_step)
    for got, expected in zip(run_steps(host, *args), run_steps(reference, *args)):
        for buffer in expected:
            np.testing.assert_array_equal(got[buffer], expected[buffer],
                                          err_msg=f"{name}: {buffer}")


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("clip", CLIPS)
def test_non_finite_as_the_reference(host, name, clip):
    """NaN and +-inf gradients and parameters give the reference's NaN and inf, bit for bit:
    NaN through the clip, 0 * inf in an exempt segment's decay, NaN winning amsgrad's max."""
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    dtype = np.float32
    params, grads, offsets, seg_scale, seg_decay = flat_problem(HOST_LAYOUTS["odd"], dtype, seed=7)
    for g in grads:
        g[[1, 6, 20, 21, 40]] = [np.nan, np.inf, -np.inf, np.nan, np.inf]
    params[[3, 12, 30]] = [np.inf, np.nan, -np.inf]  # in a decayed and an exempt segment
    results = []
    for backend in (host, reference):
        buffers = [backend.to_device(params.copy(), dtype)] + [
            backend.to_device(np.zeros(params.size), dtype) for _ in state_names]
        segments = [backend.to_device(a, a.dtype) for a in (offsets, seg_scale, seg_decay)]
        with np.errstate(all="ignore"):  # the reference's inf - inf and 0 * inf
            for step in range(1, 3):
                getattr(backend, op)(*buffers[:1], backend.to_device(grads[step], dtype),
                                     *buffers[1:], *segments, CLIPS[clip], *hyper,
                                     *per_step(step))
        results.append(buffers)
    for buffer, got, expected in zip(["params"] + state_names, *results):
        np.testing.assert_array_equal(got, expected, err_msg=buffer)
    assert np.isnan(results[0][0]).any() and np.isfinite(results[0][0]).any()


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("skip", [0.0, 1.0, -2.0, math.nan])
def test_status_skips_the_update(host, name, skip):
    """status[GUARD_SKIP] != 0 (NaN included) leaves parameters and state as they were;
    0 updates as without a status. Other entries of the record do not matter."""
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    dtype = np.float32
    params, grads, offsets, seg_scale, seg_decay = flat_problem(HOST_LAYOUTS["odd"], dtype, seed=3)
    status = np.array([7.0, 2.0, 0.0])
    status[spec.GUARD_SKIP] = skip
    results = []
    for backend in (host, reference):
        buffers = [backend.to_device(params.copy(), dtype)] + [
            backend.to_device(np.full(params.size, 0.25), dtype) for _ in state_names]
        segments = (backend.to_device(a, a.dtype) for a in (offsets, seg_scale, seg_decay))
        getattr(backend, op)(*buffers[:1], backend.to_device(grads[0], dtype), *buffers[1:],
                             *segments, CLIPS["clip"], *hyper, *per_step(2), status=status)
        results.append(buffers)
    for name_, got, expected in zip(["params"] + state_names, *results):
        np.testing.assert_array_equal(got, expected, err_msg=name_)
    moved = not np.array_equal(results[0][0], params)
    assert moved == (skip == 0.0)


@pytest.mark.parametrize("sizes", [[1], [0, 1], [4, 0], [0, 3, 0, 0, 5, 1, 6, 0], [2, 2, 1, 3]])
def test_segment_of(lib, sizes):
    """The last segment starting at or before i: the one that holds i, past empty ones."""
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(offsets[-1])
    got = np.full(n, -1, dtype=np.int64)
    cuda_host.call(lib, "segment_of_each", offsets, len(sizes), n, got)
    expected = np.searchsorted(offsets, np.arange(n), side="right") - 1
    np.testing.assert_array_equal(got, expected)
    assert ((offsets[got] <= np.arange(n)) & (np.arange(n) < offsets[got + 1])).all()


def run_norms(optim, lib, grads, offsets, clip_value, chunk, acc=None):
    """out of grad_sq_norms through the kernels' arguments, with the partials given NaN
    first so that a slot read but never written shows; ``acc`` as grad_sq_norms' own."""
    segments = offsets.size - 1
    blocks = -(-grads.size // chunk)
    partials = np.full(blocks + segments, np.nan)
    out = np.full(segments, -1.0)
    partial_args, total_args = optim._norm_args(grads, offsets, clip_value, chunk, blocks,
                                                partials, out, acc)
    getattr(lib, f"sq_norm_partials_{SUFFIX[grads.dtype]}")(ctypes.c_longlong(blocks),
                                                            *map(c_argument, partial_args))
    lib.sq_norm_totals(*map(c_argument, total_args))
    return out, (partial_args, total_args)


@pytest.mark.parametrize("layout", HOST_LAYOUTS)
@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("chunk", ["layout", 1, 3, 64, 4099])
def test_grad_sq_norms(optim, lib, dtype, layout, clip, chunk):
    """Each segment's sum over the blocks that overlap it; chunk 1 makes a block of every
    element, so every boundary and empty segment meets a block edge."""
    _, grads, offsets, _, _ = flat_problem(HOST_LAYOUTS[layout], dtype, seed=2)
    chunk = optim._norm_layout(grads[0].size)[0] if chunk == "layout" else chunk
    got, _ = run_norms(optim, lib, grads[0], offsets, CLIPS[clip], chunk)
    expected = np.full(offsets.size - 1, -1.0)
    reference.grad_sq_norms(grads[0], offsets, CLIPS[clip], expected)
    # Sums of float64 squares of float32 values: both are exact to float64 rounding.
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n", [0, 1, 4095, 4096, 4097, 10**6, 2**31 + 5, 2**40])
def test_norm_layout(optim, n):
    """A bounded number of blocks whose chunks cover the buffer exactly once."""
    chunk, blocks = optim._norm_layout(n)
    assert chunk >= optim.MIN_NORM_CHUNK and blocks <= optim.MAX_NORM_BLOCKS
    assert (blocks - 1) * chunk < n <= blocks * chunk if n else blocks == 0


@pytest.fixture(scope="module")
def signatures(optim):
    """Kernel name expression -> its parameter types, from NVRTC's lowered (mangled) names."""
    try:
        from cupy.cuda import nvrtc
    except ImportError as error:
        pytest.skip(f"NVRTC cannot be loaded through CuPy here: {error}")
    demangler = shutil.which("c++filt")
    if demangler is None:
        pytest.skip("no c++filt on PATH to read the kernels' mangled names")
    from kernels.cuda.compiler import OPTIONS

    source = optim._SOURCE
    program = nvrtc.createProgram(source.code, source.path.name, [], [])
    for name in source.name_expressions:
        nvrtc.addNameExpression(program, name)
    nvrtc.compileProgram(program, list(OPTIONS) + ["--gpu-architecture=compute_80"])
    lowered = [nvrtc.getLoweredName(program, name) for name in source.name_expressions]
    demangled = subprocess.run([demangler], input="\n".join(lowered), capture_output=True,
                               text=True, check=True).stdout.splitlines()
    return {name: [p.strip() for p in text[text.index("(") + 1:text.rindex(")")].split(",")]
            for name, text in zip(source.name_expressions, demangled)}


def assert_argument_types(signature, args, what):
    assert len(args) == len(signature), f"{what}: {len(args)} arguments for {signature}"
    for i, (arg, c_type) in enumerate(zip(args, signature)):
        where = f"{what}, argument {i} (the kernel's {c_type})"
        if arg is None or isinstance(arg, np.ndarray):
            assert c_type.endswith("*"), f"{where}: an array"
            if arg is not None:
                base = c_type.replace("const", "").replace("*", "").strip()
                assert base == C_TYPES[arg.dtype.type], f"{where}: {arg.dtype}"
        else:
            assert C_TYPES[type(arg)] == c_type, f"{where}: {type(arg).__name__}"


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("with_status", [False, True])
def test_update_argument_types(host, signatures, dtype, name, with_status):
    """Every argument an op passes has the C type of the kernel's parameter (CuPy passes a
    NumPy scalar by its own size whatever the parameter is)."""
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    params, grads, *segments = flat_problem(HOST_LAYOUTS["odd"], dtype, seed=4)
    status = np.zeros(spec.GUARD_SIZE) if with_status else None
    buffers = [host.to_device(a, dtype)
               for a in [params, grads[0]] + [np.zeros_like(params)] * len(state_names)]
    getattr(host, op)(*buffers, *(host.to_device(a, a.dtype) for a in segments), CLIPS["clip"],
                      *hyper, *per_step(1), status=status)
    (kernel, args), = host.launcher.launches
    assert kernel in signatures
    assert_argument_types(signatures[kernel], args, kernel)


def test_norm_argument_types(optim, lib, signatures, dtype):
    _, grads, offsets, _, _ = flat_problem(HOST_LAYOUTS["model"], dtype, seed=5)
    _, (partial_args, total_args) = run_norms(optim, lib, grads[0], offsets, 0.5, 64)
    assert_argument_types(signatures[f"sq_norm_partials<{C_TYPES[np.dtype(dtype).type]}>"],
                          partial_args, "sq_norm_partials")
    assert_argument_types(signatures["sq_norm_totals"], total_args, "sq_norm_totals")


def test_host_arrays_are_refused(optim):
    """Arrays an op writes must be on the device; the message names the argument."""
    params, grads, offsets, seg_scale, seg_decay = flat_problem([3, 2], np.float32, seed=6)
    with pytest.raises(TypeError, match="params must be a CuPy array"):
        optim.adagrad(params, grads[0], np.zeros_like(params), offsets, seg_scale, seg_decay,
                      math.inf, None, spec.L1_GRADIENT, 0.1, 1e-10)
    with pytest.raises(TypeError, match="grads must be a CuPy array"):
        optim.grad_sq_norms(grads[0], offsets, math.inf, np.zeros(2))


# ------------------------------------------------- penalties and constraints (issue 9)
L1_RULES = {"clipped": spec.L1_CLIPPED, "proximal": spec.L1_PROXIMAL}


def l1_coefficients(sizes):
    """0.5, 1.0, ... on even segments (weights), 0 on odd ones (biases)."""
    return np.array([0.5 * (s + 1) if s % 2 == 0 else 0.0 for s in range(len(sizes))])


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("rule", L1_RULES)
def test_update_with_l1_rule_rounds_as_the_reference(host, dtype, name, rule):
    """optim_math.cuh's l1_after_step after every optimizer, bit for bit against the
    reference (its min, abs, sign and one product by +-1 or a max round as NumPy's)."""
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    sizes = HOST_LAYOUTS["odd"]
    args = (op, sizes, dtype, CLIPS["clip"], state_names, hyper, per_step)
    l1 = (l1_coefficients(sizes), L1_RULES[rule])
    got, expected = run_steps(host, *args, l1=l1), run_steps(reference, *args, l1=l1)
    for step_got, step_expected in zip(got, expected):
        for buffer in step_expected:
            np.testing.assert_array_equal(step_got[buffer], step_expected[buffer],
                                          err_msg=f"{name} {rule}: {buffer}")
    assert not np.array_equal(expected[-1]["params"], run_steps(reference, *args)[-1]["params"])


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_l1_rule_argument_types(host, signatures, dtype, name):
    """seg_l1 (a double pointer), the rule's lr (double) and the rule (int)."""
    op, state_names, hyper, per_step = OPTIMIZERS[name]
    params, grads, *segments = flat_problem(HOST_LAYOUTS["odd"], dtype, seed=4)
    buffers = [host.to_device(a, dtype)
               for a in [params, grads[0]] + [np.zeros_like(params)] * len(state_names)]
    getattr(host, op)(*buffers, *(host.to_device(a, a.dtype) for a in segments), CLIPS["clip"],
                      l1_coefficients(HOST_LAYOUTS["odd"]), spec.L1_PROXIMAL, *hyper[2:], *per_step(1))
    (kernel, args), = host.launcher.launches
    assert_argument_types(signatures[kernel], args, kernel)


def run_penalized_norms(optim, lib, grads, params, offsets, chunk, l1_in_gradient, total):
    """grads (written), out and total of grad_sq_norms with a penalty, through the
    kernels' arguments, the partials given NaN first."""
    segments = offsets.size - 1
    blocks = -(-grads.size // chunk)
    partials = np.full(3 * (blocks + segments), np.nan)
    out = np.full(segments, -1.0)
    penalty = (params, l1_coefficients(offsets[1:]) / 50, l1_coefficients(offsets[1:]) / 5,
               l1_in_gradient, total)
    partial_args, total_args = optim._norm_args(grads, offsets, 0.5, chunk, blocks, partials, out,
                                                None, penalty)
    if blocks:
        getattr(lib, f"sq_norm_partials_{SUFFIX[grads.dtype]}")(ctypes.c_longlong(blocks),
                                                                *map(c_argument, partial_args))
    lib.sq_norm_totals(*map(c_argument, total_args))
    return out, (partial_args, total_args), penalty


@pytest.mark.parametrize("layout", HOST_LAYOUTS)
@pytest.mark.parametrize("chunk", ["layout", 1, 64])
@pytest.mark.parametrize("l1_in_gradient", [True, False])
def test_grad_sq_norms_with_penalty(optim, lib, dtype, layout, chunk, l1_in_gradient):
    """The gradient bit for bit (penalized_grad rounds as the reference), the norms and the
    penalty's value (penalty_total over the partials' halves) at float64 rounding."""
    params, grads, offsets, _, _ = flat_problem(HOST_LAYOUTS[layout], dtype, seed=8)
    params[3::7] = 0
    chunk = optim._norm_layout(params.size)[0] if chunk == "layout" else chunk
    g, total = grads[0].copy(), np.array([0.25])
    out, _, penalty = run_penalized_norms(optim, lib, g, params, offsets, chunk, l1_in_gradient, total)
    g_ref, out_ref, total_ref = grads[0].copy(), np.zeros(offsets.size - 1), np.array([0.25])
    reference.grad_sq_norms(g_ref, offsets, 0.5, out_ref, None, params, penalty[1], penalty[2],
                            l1_in_gradient, total_ref)
    np.testing.assert_array_equal(g, g_ref)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(total, total_ref, rtol=1e-12, atol=0)


def test_penalized_norm_argument_types(optim, lib, signatures, dtype):
    params, grads, offsets, _, _ = flat_problem(HOST_LAYOUTS["model"], dtype, seed=5)
    _, (partial_args, total_args), _ = run_penalized_norms(optim, lib, grads[0], params, offsets, 4099,
                                                           True, np.zeros(1))
    assert_argument_types(signatures[f"sq_norm_partials<{C_TYPES[np.dtype(dtype).type]}>"],
                          partial_args, "sq_norm_partials")
    assert_argument_types(signatures["sq_norm_totals"], total_args, "sq_norm_totals")


@pytest.mark.parametrize("shape", [(1, 1), (37, 33), (3000, 3), (2, 70)])
def test_max_norm_columns(lib, dtype, shape):
    """constraints.cuh's column math in the kernel's order against the reference."""
    from kernels.spec import MAX_NORM_EPS

    rs = np.random.default_rng(shape[0])
    W = (rs.standard_normal(shape) * rs.uniform(0, 4 / math.sqrt(shape[0]), shape[1])).astype(dtype)
    W[:, 0] = 0
    got, expected = W.copy(), W.copy()
    cuda_host.call(lib, f"max_norm_columns_{SUFFIX[np.dtype(dtype)]}", got, shape[0], shape[1], 1.0,
                   MAX_NORM_EPS)
    reference.max_norm(expected, 1.0)
    # The column sums add in another order: float64 rounding, then one rounding to the dtype.
    np.testing.assert_allclose(got, expected, rtol=1e-12 if dtype == np.float64 else 1.2e-7, atol=0)
