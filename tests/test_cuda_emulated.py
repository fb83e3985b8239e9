"""kernels.cuda's real ops, launches and all, on gpuocelot's PTX emulator (no GPU needed).

Not part of CI (it has no emulator): this tier runs only where the environment variable
FUSEDENSE_OCELOT names the gpuocelot library (tests/emulated_cuda.py says how it is used):

    FUSEDENSE_OCELOT=/path/to/libgpuocelot.so python -m pytest -q tests/test_cuda_emulated.py

It runs kernels.cuda's ops with their own grids, blocks, shared memory and arguments on
NumPy buffers, so index and launch bugs of the CUDA kernels show without a device. Each
case runs in a forked process (the emulator aborts on an error), killed after
FUSEDENSE_OCELOT_TIMEOUT seconds (300 by default; the slowest case takes about 10).

1. Every kernel test of tests/test_kernels_{dense,optim,decisions,losses,norm,loss_weights,
   augment}.py that takes
   the ``fast`` (or ``any_backend``) fixture runs again with it = the emulated kernels.cuda, unchanged:
   same cases, same comparisons with kernels.reference. Warp shuffles run through the
   emulator-only stand-in of fd::shfl_xor (tests/emulated_cuda.py); a kernel whose PTX
   still has one skips at that launch ("gpuocelot does not execute warp shuffles").
2. Launch shapes the small test shapes never reach: several row chunks of the backward
   column sums, grid-stride loops (once at the real block caps, otherwise with the caps
   lowered so that small arrays loop), rows wider than a block (softmax, losses and
   metrics), misaligned and strided optimizer buffers, the 16-byte vector and the element
   paths of the dense forward epilogue and dropout mask (which one launched is asserted).
3. The launch checks of the emulation fire (a test that can fail must be able to).
"""
import functools
import inspect
import os

import numpy as np
import pytest

if not os.path.isfile(os.environ.get("FUSEDENSE_OCELOT", "")):
    pytest.skip("the emulated CUDA tier needs FUSEDENSE_OCELOT=<path of libgpuocelot.so> "
                "(gpuocelot's PTX emulator, built outside this project)", allow_module_level=True)
pytest.importorskip("cupy", reason="kernels.cuda needs CuPy installed (no device needed)")

import emulated_cuda  # noqa: E402
import kernels.reference as reference  # noqa: E402
import test_kernels_augment  # noqa: E402
import test_kernels_decisions  # noqa: E402
import test_kernels_dense as dense_tests  # noqa: E402
import test_kernels_loss_weights  # noqa: E402
import test_kernels_losses  # noqa: E402
import test_kernels_norm  # noqa: E402
import test_kernels_optim as optim_tests  # noqa: E402
from kernels import spec  # noqa: E402
from kernels.cuda import compiler, dense, losses, optim  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ptx_cache(tmp_path_factory):
    """PTX compiled once per session, shared by the forked cases."""
    emulated_cuda.cache_dir = tmp_path_factory.mktemp("ptx")
    yield
    emulated_cuda.cache_dir = None


@pytest.fixture
def fast():
    """kernels.cuda; emulated_cuda.run_isolated puts it on the emulator in the child."""
    import kernels.cuda

    return kernels.cuda


any_backend = fast  # the name of tests that also run on the reference


# ------------------------------------------------------- 1. the backends' kernel tests
def _emulated(test):
    """``test`` (same parameters and marks) run by emulated_cuda.run_isolated."""
    @functools.wraps(test)
    def run(**kwargs):
        emulated_cuda.run_isolated(test, **kwargs)
    return run


for _module in (dense_tests, optim_tests, test_kernels_decisions, test_kernels_losses,
                test_kernels_norm, test_kernels_loss_weights, test_kernels_augment):
    for _name, _test in vars(_module).items():
        if (_name.startswith("test_") and inspect.isfunction(_test)
                and {"fast", "any_backend"} & set(inspect.signature(_test).parameters)):
            globals()[_name] = _emulated(_test)


# ------------------------------------------------- 2. launch shapes beyond those tests
def isolated(test):
    """A test of this module whose body runs on the emulator, in a forked process."""
    return _emulated(test)


def lowered(module, **caps):
    """``module``'s launch caps set to ``caps`` in the (forked) caller, e.g. MAX_BLOCKS=3:
    small arrays then take the grid-stride and row loops that large ones take."""
    for name, value in caps.items():
        assert hasattr(module, name), name
        setattr(module, name, value)


@pytest.mark.parametrize("act", [spec.IDENTITY, spec.GELU, spec.PRELU])
@pytest.mark.parametrize("alias", ["separate", "Z", "dY"])
@pytest.mark.parametrize("shape", [(65, 3, 1), (200, 7, 45), (1500, 2, 33)], ids=str)
@isolated
def test_backward_several_row_chunks(fast, dtype, act, alias, shape):
    """More rows than one chunk (MIN_CHUNK_ROWS): partial column sums and
    finish_column_sums; 45 and 33 columns: a partial second column tile."""
    n = shape[0]
    assert dense._row_chunks(n)[1] > 1
    X, W, _, slope, dY = dense_tests.layer_inputs(shape, dtype, "contiguous", seed=11)
    Xf, Wf, _, slope_f, dYf = dense_tests.layer_inputs(shape, dtype, "contiguous", seed=11,
                                                       backend=fast)
    Z = np.random.default_rng(12).standard_normal(dY.shape).astype(dtype)
    Zf = fast.to_device(Z, dtype)
    for p in (0.0, 0.4):
        key = dense_tests.KEYS[2]
        expected = dense_tests.run_backward(reference, dY, X, W, Z, act, slope, p, key,
                                            alias="separate")
        got = dense_tests.run_backward(fast, dYf, Xf, Wf, Zf, act, slope_f, p, key, alias=alias)
        dense_tests.assert_backward_close(dense_tests.on_host(fast, got), expected, dY, X, W, Z,
                                          p, dtype, f"{shape} dZ is {alias}, p={p}")


@pytest.mark.parametrize("act", [spec.ELU, spec.PRELU])
@pytest.mark.parametrize("shape", [(1031, 4, 1021), (1025, 3, 1024)], ids=str)
@isolated
def test_forward_grid_stride_at_the_real_cap(fast, dtype, act, shape):
    """More elements than MAX_BLOCKS * BLOCK threads (2^20): each thread takes several,
    its column stepped by stride mod m (1021: a remainder; 1024: none). 1024 columns take
    the 16-byte path, whose groups fit in the grid: its loop is tested with the cap lowered
    (test_forward_vector_and_element_paths)."""
    n, _, m = shape
    assert n * m > dense.MAX_BLOCKS * dense.BLOCK
    forward_matches_reference(fast, dtype, act, shape, in_place=act == spec.PRELU)


@pytest.mark.parametrize("act", [spec.RELU, spec.PRELU])
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 2, 13), (5, 3, 256), (33, 5, 17), (9, 2, 700)],
                         ids=str)
@pytest.mark.parametrize("blocks", [1, 3])
@isolated
def test_forward_grid_stride_lowered_cap(fast, dtype, act, shape, blocks):
    """The grid-stride loop of forward_epilogue with the grid capped at 1 or 3 blocks:
    strides of 256 and 768 against column counts below, equal to and above them."""
    lowered(dense, MAX_BLOCKS=blocks)
    forward_matches_reference(fast, dtype, act, shape, in_place=False)
    for p in (0.0, 0.6):
        got, expected = fast.zeros(shape[::2], dtype), reference.zeros(shape[::2], dtype)
        fast.dropout_mask(p, dense_tests.KEYS[1], got)
        reference.dropout_mask(p, dense_tests.KEYS[1], expected)
        assert np.array_equal(fast.to_host(got), expected)
        X = np.random.default_rng(2).standard_normal(shape[::2]).astype(dtype) * 5
        fast.apply_output(spec.OUTPUT_SIGMOID, fast.to_device(X, dtype), got)
        reference.apply_output(spec.OUTPUT_SIGMOID, X, expected)
        dense_tests.assert_close(fast.to_host(got), expected, dtype, "sigmoid")


def forward_matches_reference(fast, dtype, act, shape, in_place):
    X, W, b, slope, _ = dense_tests.layer_inputs(shape, dtype, "contiguous", seed=13)
    Xf, Wf, bf, slope_f, _ = dense_tests.layer_inputs(shape, dtype, "contiguous", seed=13,
                                                      backend=fast)
    p, key = 0.3, dense_tests.KEYS[3]
    Zf, Yf = dense_tests.run_forward(fast, Xf, Wf, bf, act, slope_f, p, key, in_place)
    Zr, Yr = dense_tests.run_forward(reference, X, W, b, act, slope, p, key, in_place=False)
    if not in_place:
        dense_tests.assert_close(fast.to_host(Zf), Zr, dtype, "Z")
    dense_tests.assert_close(fast.to_host(Yf), Yr, dtype, "Y")


def recorded_launches():
    """The name expressions of the kernels launched from now on in this (forked) process,
    appended to the list returned as each launch happens."""
    names = []
    function = compiler.Source.function  # the emulator's, under emulated_cuda.emulation

    def recording(source, template, dtype=None):
        kernel = function(source, template, dtype)

        def launch(*args, **kwargs):
            names.append(kernel.name_expression)
            return kernel(*args, **kwargs)
        return launch

    compiler.Source.function = recording
    return names


def placed(fast, host, misaligned):
    """``host`` as a C-contiguous device array starting on 16 bytes, or, when
    ``misaligned``, one element past such a start (the element path)."""
    offset = 1 if misaligned else 0
    flat = fast.zeros((host.size + offset,), host.dtype)[offset:]
    assert (flat.data.ptr % dense.VECTOR_BYTES == 0) != misaligned
    array = flat.reshape(host.shape)
    array[...] = host
    return array


VECTOR_WIDTHS = {np.float32: 4, np.float64: 2}


# 8 and 12 columns: whole float4 and double2 groups; 6: double2 groups only; 5: neither.
# 300 x 12 with the grid capped at one block: a thread loops over groups a grid apart.
@pytest.mark.parametrize("shape, blocks", [((3, 5, 8), None), ((7, 2, 12), None),
                                           ((5, 3, 6), None), ((4, 3, 5), None),
                                           ((300, 3, 12), 1)], ids=str)
@pytest.mark.parametrize("misaligned", ["none", "Z", "Y", "b"])
@isolated
def test_forward_vector_and_element_paths(fast, dtype, shape, blocks, misaligned):
    """forward_epilogue<T, V> takes 16-byte groups exactly when the row width is a multiple
    of V and Z, Y and b start on 16 bytes, else single elements; both match the reference
    (masks hashed per element: dropped elements agree), separate or in place, p = 0 and
    p > 0, identity (bias only) and prelu (slope loaded as a group too)."""
    if blocks is not None:
        lowered(dense, MAX_BLOCKS=blocks)
    n, _, m = shape
    width = VECTOR_WIDTHS[dtype]
    expected_width = width if m % width == 0 and misaligned == "none" else 1
    X, W, b, slope, _ = dense_tests.layer_inputs(shape, dtype, "contiguous", seed=17)
    Xf, Wf, bf, slope_f, _ = dense_tests.layer_inputs(shape, dtype, "contiguous", seed=17,
                                                      backend=fast)
    if misaligned == "b":
        bf = placed(fast, b, misaligned=True)
    launches = recorded_launches()
    for act in (spec.IDENTITY, spec.PRELU):
        for in_place in (False, True):
            if in_place and misaligned == "Y":
                continue  # Y is Z: covered by misaligned Z
            for p in (0.0, 0.3):
                key = dense_tests.KEYS[2]
                Zr, Yr = dense_tests.run_forward(reference, X, W, b, act, slope, p, key,
                                                 in_place=False)
                Zf = placed(fast, np.zeros((n, m), dtype), misaligned == "Z")
                Yf = Zf if in_place else placed(fast, np.zeros((n, m), dtype), misaligned == "Y")
                launches.clear()
                fast.dense_forward(Xf, Wf, bf, act, dense_tests.ACT_PARAM,
                                   slope_f if act == spec.PRELU else None, p, key, Zf, Yf)
                c_type = compiler.C_TYPES[np.dtype(dtype)]
                assert launches == [f"forward_epilogue<{c_type}, {expected_width}>"]
                what = f"act {act}, in place {in_place}, p={p}"
                if not in_place:
                    dense_tests.assert_close(fast.to_host(Zf), Zr, dtype, f"Z, {what}")
                dense_tests.assert_close(fast.to_host(Yf), Yr, dtype, f"Y, {what}")


@pytest.mark.parametrize("shape", [(2, 8), (3, 5, 4), (1, 6), (7, 13), (300, 12)], ids=str)
@pytest.mark.parametrize("misaligned", [False, True])
@pytest.mark.parametrize("blocks", [None, 1])
@isolated
def test_dropout_mask_vector_and_element_paths(fast, dtype, shape, misaligned, blocks):
    """dropout_mask<T, V>: 16-byte groups when the size is a multiple of V and out starts
    on 16 bytes, else single elements; bit for bit the reference's mask either way."""
    if blocks is not None:
        lowered(dense, MAX_BLOCKS=blocks)
    size = int(np.prod(shape))
    width = VECTOR_WIDTHS[dtype]
    expected_width = width if size % width == 0 and not misaligned else 1
    launches = recorded_launches()
    for p in (0.0, 0.5):
        expected = reference.zeros(shape, dtype)
        reference.dropout_mask(p, dense_tests.KEYS[1], expected)
        got = placed(fast, np.full(shape, np.nan, dtype), misaligned)
        launches.clear()
        fast.dropout_mask(p, dense_tests.KEYS[1], got)
        assert launches == [f"dropout_mask<{compiler.C_TYPES[np.dtype(dtype)]}, {expected_width}>"]
        assert np.array_equal(fast.to_host(got), expected), f"p={p}"


@pytest.mark.parametrize("shape", [(3, 31), (2, 33), (4, 257), (3, 1000), (1, 5000), (70, 1)],
                         ids=str)
@pytest.mark.parametrize("row_blocks", [None, 2])
@isolated
def test_softmax_rows(fast, dtype, shape, row_blocks):
    """Rows narrower and wider than the block (256 threads at most, so a thread loops over
    columns), and, with the grid capped at 2 blocks, the loop over rows."""
    if row_blocks is not None:
        lowered(dense, MAX_ROW_BLOCKS=row_blocks)
    X = (np.random.default_rng(7).standard_normal(shape) * 6).astype(dtype)
    X[-1, -1] = 80  # one term dominating its row's sum
    got, expected = fast.zeros(shape, dtype), reference.zeros(shape, dtype)
    fast.apply_output(spec.OUTPUT_SOFTMAX, fast.to_device(X, dtype), got)
    reference.apply_output(spec.OUTPUT_SOFTMAX, X, expected)
    dense_tests.assert_close(fast.to_host(got), expected, dtype, "softmax")
    in_place = fast.to_device(X, dtype)  # out may be X
    fast.apply_output(spec.OUTPUT_SOFTMAX, in_place, in_place)
    dense_tests.assert_close(fast.to_host(in_place), expected, dtype, "softmax in place")


@isolated
def test_softmax_more_rows_than_the_grid(fast):
    """65537 rows: one more than the grid's cap, so block 0 takes rows 0 and 65536."""
    dtype = np.float32
    X = np.random.default_rng(8).standard_normal((dense.MAX_ROW_BLOCKS + 1, 2)).astype(dtype)
    got, expected = fast.zeros(X.shape, dtype), reference.zeros(X.shape, dtype)
    fast.apply_output(spec.OUTPUT_SOFTMAX, fast.to_device(X, dtype), got)
    reference.apply_output(spec.OUTPUT_SOFTMAX, X, expected)
    dense_tests.assert_close(fast.to_host(got), expected, dtype, "softmax")


# Optimizers: one per kernel (the others share its loop), with their state buffers.
UPDATE_KERNELS = ["sgd_nesterov", "adagrad", "rmsprop_centered_momentum", "adadelta",
                  "adamw_amsgrad", "nadam"]


@pytest.mark.parametrize("name", UPDATE_KERNELS)
@pytest.mark.parametrize("layout", ["odd", "model"])
@isolated
def test_optimizer_grid_stride(fast, dtype, name, layout):
    """optim's grid capped at 1 and 2 blocks: every thread loops over many units
    (vectors or elements) and crosses segment boundaries."""
    for blocks in (1, 2):
        lowered(optim, MAX_UPDATE_BLOCKS=blocks)
        optim_tests.test_optimizer(fast, reference, dtype, name, layout, "clip")


@pytest.mark.parametrize("name", UPDATE_KERNELS)
@pytest.mark.parametrize("layout", ["offset", "strided"])
@isolated
def test_optimizer_unaligned_and_strided_buffers(fast, dtype, name, layout):
    """Buffers starting one element past a 16-byte boundary (contiguous: the kernels'
    element path instead of 16-byte vectors) or strided (updated through copies)."""
    op, state_names, hyper, per_step = optim_tests.OPTIMIZERS[name]
    sizes = [5, 0, 37, 1, 300]
    params, grads, offsets, seg_scale, seg_decay = optim_tests.flat_problem(sizes, dtype, seed=5)
    n = params.size

    def place(host):
        """``host`` as a device view of the layout under test."""
        if layout == "offset":
            base = fast.zeros((n + 1,), dtype)
            view = base[1:]
            assert view.data.ptr % 16 != 0
        else:
            base = fast.zeros((2 * n,), dtype)
            view = base[::2]
        view[...] = host
        return view

    buffers = {"params": place(params), **{s: place(np.zeros(n, dtype)) for s in state_names}}
    expected = {"params": params.copy(), **{s: np.zeros(n, dtype) for s in state_names}}
    segments = [fast.to_device(a, a.dtype) for a in (offsets, seg_scale, seg_decay)]
    for step in range(1, optim_tests.STEPS + 1):
        g = place(grads[step - 1])
        state = [buffers[s] for s in state_names]
        getattr(fast, op)(buffers["params"], g, *state, *segments, 0.5, *hyper, *per_step(step))
        getattr(reference, op)(expected["params"], grads[step - 1],
                               *(expected[s] for s in state_names), offsets, seg_scale, seg_decay,
                               0.5, *hyper, *per_step(step))
        got = [{k: fast.to_host(v).copy() for k, v in buffers.items()}]
        optim_tests.assert_history_close(got, [expected], dtype, f"{name} {layout}, step {step}")


# Losses and metrics: the kernel tests' rows are at most 1000 wide (a warp per row) and
# their grids a few blocks; these lower losses' caps (decisions launches through the same
# helpers) or pass wider rows.
LOSS_CAPS = {"block_rows": dict(WIDE_ROW=4), "loops": dict(MAX_BLOCKS=2),
             "block_rows_loops": dict(WIDE_ROW=4, MAX_BLOCKS=2)}
# One column (a warp per row whatever the cap), rows of 8 per block over 5 blocks, and 4500
# elements: 5 element blocks of 1024 (ELEMENT_THREADS x ELEMENTS_PER_THREAD).
LOWERED_SHAPES = [(1, 1), (7, 13), (33, 5), (3, 1500)]


@pytest.mark.parametrize("caps", LOSS_CAPS)
@isolated
def test_losses_and_metrics_lowered_caps(fast, dtype, caps):
    """WIDE_ROW = 4: rows of 5 or more columns take a block each (BlockRows, the block
    reductions of the softmax, argmax and sums over 512 threads, most of them past the
    row's end); MAX_BLOCKS = 2: the row and element loops run several times a block."""
    lowered(losses, **LOSS_CAPS[caps])
    run_loss_and_metric_tests(fast, dtype, LOWERED_SHAPES, LOWERED_SHAPES)


@isolated
def test_losses_and_metrics_wide_rows(fast, dtype):
    """Rows wider than WIDE_ROW at the real caps: a block per row, each thread looping over
    several columns (1025: one thread a column more than the others)."""
    shapes = [(3, losses.WIDE_ROW + 1), (2, 3000)]
    run_loss_and_metric_tests(fast, dtype, shapes, shapes)


def run_loss_and_metric_tests(fast, dtype, loss_shapes, metric_shapes):
    """The losses' and metric_sums' kernel tests, on the shapes given."""
    for shape in loss_shapes:
        for reduction in (spec.MEAN, spec.SUM):
            test_kernels_losses.test_cross_entropy_class_targets(fast, reference, dtype, shape,
                                                                 0.1, reduction, "both")
            test_kernels_losses.test_cross_entropy_dense_targets(fast, reference, dtype, shape,
                                                                 True, 0.1, reduction)
        for name in test_kernels_losses.ELEMENT_LOSSES:
            test_kernels_losses.test_elementwise_losses(fast, reference, dtype, name, shape,
                                                        spec.MEAN, "both")
    for shape in metric_shapes:
        for kind in test_kernels_decisions.KINDS:
            test_kernels_decisions.test_metric_sums(fast, reference, dtype, kind, shape)


# ----------------------------------------------------------- 3. the emulation itself
@isolated
def test_launch_checks_catch_bad_launches(fast):
    """The checks of emulated_cuda.Kernel fire: a Python int, a scalar of the wrong C
    type, a 0-sized grid, a host array, and a kernel writing past its array (here told
    one element more than the array has)."""
    kernel = dense._SOURCE.function("dropout_mask<float, 1>")
    out = fast.zeros((5,), np.float32)
    rest = (np.uint32(1), np.uint32(2), np.uint32(0), np.float32(1))
    kernel((1,), (32,), (out, np.int64(5), *rest))  # the op's own arguments: fine
    assert (fast.to_host(out) == 1).all()
    with pytest.raises(TypeError, match="Python int"):
        kernel((1,), (32,), (out, 5, *rest))
    with pytest.raises(TypeError, match="int32 scalar"):
        kernel((1,), (32,), (out, np.int32(5), *rest))
    with pytest.raises(TypeError, match="host NumPy array"):
        kernel((1,), (32,), (np.zeros(5, np.float32), np.int64(5), *rest))
    with pytest.raises(ValueError, match="0-sized"):
        kernel((0,), (32,), (out, np.int64(5), *rest))
    with pytest.raises(AssertionError, match="4 after it"):
        kernel((1,), (32,), (out, np.int64(6), *rest))
