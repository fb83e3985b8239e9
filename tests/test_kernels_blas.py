"""The CPU backend's BLAS binding (kernels.cpu.blas): its GEMM against NumPy on every
layout it takes or copies, the dense ops on it and on the np.matmul fallback, the BLAS
thread count, binding other libraries (none, an LP64 one, MKL for large GEMMs) in a
fresh process, and the choice ENGINE_BLAS makes."""
import glob
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import TOLERANCES, load_backend
from kernels import spec
from test_kernels_dense import (ACT_PARAM, KEYS, assert_backward_close, assert_close,
                                assert_sum_close, layer_inputs, run_backward, run_forward)

ROOT = Path(__file__).resolve().parent.parent
# (m, k, n) of C (m, n) = A (m, k) @ B (k, n): single elements, vectors, odd sizes, S's
# layer, and one odd shape past LARGE_GEMM_WORK (MKL's, where it is installed).
SHAPES = [(1, 1, 1), (1, 5, 1), (3, 1, 4), (5, 4, 1), (7, 13, 5), (33, 21, 19), (64, 64, 128),
          (67, 71, 59)]


@pytest.fixture
def blas():
    load_backend("cpu")
    from kernels.cpu import blas
    if not blas.ENABLED:
        pytest.skip("no BLAS with CBLAS gemm symbols was found in this process")
    return blas


def numpy_makes_the_call(blas, m, k, n):
    """Whether a GEMM of these sizes goes to NumPy's own BLAS (not to MKL), so that
    np.matmul, making the same cblas call, gives the very same numbers."""
    from kernels.cpu.mkl import LARGE_GEMM_WORK
    return min(m, k, n) > 1 and (m * k * n < LARGE_GEMM_WORK or blas.large_library() == blas.library())


def laid_out(values, layout):
    """``values`` (2-D) in an array of the given memory layout, the same numbers."""
    rows, cols = values.shape
    if layout == "contiguous":
        return values.copy()
    if layout == "column_slice":  # rows further apart than their length: BLAS's lda
        base = np.full((rows, cols + 7), np.nan, values.dtype)
        base[:, 3:3 + cols] = values
        return base[:, 3:3 + cols]
    if layout == "transposed":  # the transpose of a C array: BLAS's Trans flag
        return values.T.copy().T
    if layout == "transposed_slice":  # both: column-major with a leading dimension
        base = np.full((cols + 5, rows), np.nan, values.dtype)
        base[2:2 + cols] = values.T
        return base[2:2 + cols].T
    if layout == "reversed":  # a negative stride: BLAS cannot take it, copied first
        return values[::-1].copy()[::-1]
    if layout == "every_other":  # an element stride: copied first (unless one row)
        base = np.full((rows, 2 * cols), np.nan, values.dtype)
        base[:, ::2] = values
        return base[:, ::2]
    raise ValueError(layout)


LAYOUTS = ["contiguous", "column_slice", "transposed", "transposed_slice", "reversed",
           "every_other"]


def operands(shape, dtype, seed=0):
    m, k, n = shape
    g = np.random.default_rng(seed)
    return g.standard_normal((m, k)).astype(dtype), g.standard_normal((k, n)).astype(dtype)


def assert_gemm_close(C, A, B, dtype, what):
    """C against A @ B in float64, each entry to TOLERANCES of the sum of its terms'
    magnitudes (a sum of k products is off by rounding of its terms, not of itself)."""
    A64, B64 = np.asarray(A, np.float64), np.asarray(B, np.float64)
    assert_sum_close(C, A64 @ B64, np.abs(A64) @ np.abs(B64), dtype, what)


@pytest.mark.parametrize("layout_b", LAYOUTS)
@pytest.mark.parametrize("layout_a", LAYOUTS)
def test_gemm_on_every_input_layout(blas, dtype, layout_a, layout_b):
    for shape in SHAPES:
        a, b = operands(shape, dtype)
        A, B = laid_out(a, layout_a), laid_out(b, layout_b)
        C = np.full((shape[0], shape[2]), np.nan, dtype)
        blas.gemm(A, B, C)
        assert_gemm_close(C, a, b, dtype, f"{shape} {layout_a} @ {layout_b}")
        if layout_a == layout_b == "contiguous" and numpy_makes_the_call(blas, *shape):
            # The very call np.matmul makes (cblas gemm, row major, no transpose), so the
            # very same numbers; with a dimension of 1 NumPy calls gemv or dot instead.
            np.testing.assert_array_equal(C, np.matmul(a, b), err_msg=str(shape))


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "column_slice", "every_other"])
def test_gemm_into_every_output_layout(blas, dtype, layout):
    for shape in SHAPES:
        a, b = operands(shape, dtype, seed=1)
        C = laid_out(np.zeros((shape[0], shape[2]), dtype), layout)
        blas.gemm(a, b, C)
        assert_gemm_close(C, a, b, dtype, f"{shape} into {layout}")
        if C.base is not None:  # a view: the rest of its buffer (nan) is left alone
            assert np.isnan(C.base).sum() == C.base.size - C.size, shape


def test_gemm_on_rows_overlapping_in_memory(blas, dtype):
    """Sliding windows over one vector (each row one element after the last): leading
    dimensions of 1, which BLAS rejects for more than one column; copied first."""
    vector = np.random.default_rng(4).standard_normal(40).astype(dtype)
    A = np.lib.stride_tricks.sliding_window_view(vector, 13)[:20]  # strides (item, item)
    B = np.lib.stride_tricks.sliding_window_view(vector, 7)[:13]
    C = np.empty((20, 7), dtype)
    blas.gemm(A, B, C)
    assert_gemm_close(C, A, B, dtype, "windows @ windows")
    C = np.empty((7, 20), dtype)
    blas.gemm(B.T, A.T, C)  # windows in columns: leading dimensions of 1 again
    assert_gemm_close(C, B.T, A.T, dtype, "transposed windows")


def test_gemm_empty_sums_and_outputs(blas, dtype):
    C = np.full((3, 4), 7.0, dtype)
    blas.gemm(np.empty((3, 0), dtype), np.empty((0, 4), dtype), C)
    np.testing.assert_array_equal(C, 0)  # np.matmul's answer to an empty sum
    blas.gemm(np.empty((0, 5), dtype), np.ones((5, 4), dtype), np.empty((0, 4), dtype))


def test_gemm_reads_inputs_before_writing_an_overlapping_output(blas, dtype):
    """Columns interleaved in one buffer: BLAS would read what it already wrote."""
    a, b = operands((9, 6, 4), dtype, seed=2)
    buffer = np.zeros((9, 10), dtype)
    buffer[:, :6] = a
    A, C = buffer[:, :6], buffer[:, 6:]
    blas.gemm(A, b, C)
    assert_gemm_close(C, a, b, dtype, "output beside its input")
    square = operands((6, 6, 6), dtype, seed=3)[0]
    C = square.copy()
    blas.gemm(C, square, C)  # C = C @ square, in place
    assert_gemm_close(C, square, square, dtype, "in place")


def test_matmul_falls_back_to_numpy(blas, dtype, monkeypatch):
    a, b = operands((7, 13, 5), dtype)
    C = np.empty((7, 5), dtype)
    monkeypatch.setattr(blas, "gemm", None)  # must not be reached
    monkeypatch.setattr(blas, "ENABLED", False)
    blas.matmul(a, b, C)
    np.testing.assert_array_equal(C, np.matmul(a, b))


def test_fits_32_bit_ints(blas):
    small = np.empty((3, 4), np.float32)
    assert blas.fits(small, None, small.T)
    wide = np.lib.stride_tricks.as_strided(small, shape=(3, 4), strides=(2**31, 4))
    assert not blas.fits(small, wide)


def dense_outputs(backend, inputs, act, p, alias):
    """Every output of a forward and a backward (dropout p) of a layer."""
    X, W, b, slope, dY, Z = inputs
    Zf, Yf = run_forward(backend, X, W, b, act, slope, p, KEYS[2], in_place=False)
    return dict(Z=Zf, Y=Yf, **run_backward(backend, dY, X, W, Z, act, slope, p, KEYS[2], alias))


@pytest.mark.parametrize("act", [spec.IDENTITY, spec.RELU, spec.PRELU])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "transposed"])
def test_dense_ops_on_kernel_blas_and_on_numpy_agree(blas, ref, dtype, act, layout, monkeypatch):
    """The kernels' own GEMMs against the np.matmul fallback, and both against the
    reference."""
    cpu = load_backend("cpu")
    alias = "dY" if act == spec.IDENTITY else "Z"  # as engine.model passes dZ
    for shape in [(1, 1, 1), (7, 13, 5), (33, 5, 17), (1, 1000, 3), (5, 1, 6), (64, 24, 130),
                  (65, 66, 67)]:
        X, W, b, slope, dY = layer_inputs(shape, dtype, layout, seed=5)
        inputs = (X, W, b, slope, dY, np.random.default_rng(6).standard_normal(dY.shape).astype(dtype))
        for p in (0.0, 0.3):
            in_kernel = dense_outputs(cpu, inputs, act, p, alias)
            with monkeypatch.context() as patch:
                patch.setattr(blas, "ENABLED", False)
                numpy_path = dense_outputs(cpu, inputs, act, p, alias)
            expected = dense_outputs(ref, inputs, act, p, "separate")
            context = f"{shape} p={p}"
            for got in (in_kernel, numpy_path):
                assert_close(got["Y"], expected["Y"], dtype, f"Y, {context}")
                assert_close(got["Z"], expected["Z"], dtype, f"Z, {context}")
                assert_backward_close(got, expected, dY, X, W, inputs[-1], p, dtype, context)
            if numpy_makes_the_call(blas, *shape):
                # Then np.matmul makes the very cblas calls the kernels make (see
                # test_gemm_on_every_input_layout): the same numbers. With a dimension of 1
                # NumPy calls gemv or dot, which sum in another order.
                for name, value in in_kernel.items():
                    if value is not None:
                        np.testing.assert_array_equal(value, numpy_path[name],
                                                      err_msg=f"{name}, {context}")


def test_set_num_threads_sets_numba_and_blas(blas):
    import numba

    cpu = load_backend("cpu")
    before, blas_before = cpu.get_num_threads(), blas.blas_threads()
    try:
        cpu.set_num_threads(1)
        assert numba.get_num_threads() == 1
        assert blas.blas_threads() in (1, None)
    finally:
        cpu.set_num_threads(before)
        if blas_before is not None:
            blas.set_blas_threads(blas_before)
    assert cpu.get_num_threads() == before and blas.blas_threads() == blas_before


def run_process(*parts, env=None):
    """Run the code ``parts`` in a new Python process from the repository root (in
    ``env``, default ours); the completed process."""
    code = "\n".join(textwrap.dedent(part) for part in parts)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def run_fresh(*parts):
    """:func:`run_process`, which must succeed; its stdout."""
    result = run_process(*parts)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# The GEMMs of a layer through every op, against NumPy's in the child process, each
# entry to TOLERANCES of the sum of its terms' magnitudes (see assert_gemm_close).
CHECK_LAYER = f"""
    import itertools
    import numpy as np
    import kernels.cpu as cpu
    from kernels import spec
    TOLERANCES = {{np.float32: {TOLERANCES[np.float32]!r}, np.float64: {TOLERANCES[np.float64]!r}}}

    def check(C, A, B):
        tol = TOLERANCES[C.dtype.type]
        exact = A.astype(np.float64) @ B.astype(np.float64)
        bound = tol["atol"] + tol["rtol"] * (np.abs(A) @ np.abs(B) + np.abs(exact))
        assert (np.abs(C - exact) <= bound).all(), np.abs(C - exact).max()

    g = np.random.default_rng(0)
    # a small layer, and one past LARGE_GEMM_WORK multiply-adds
    for (rows, fan_in, fan_out), dtype in itertools.product([(33, 21, 19), (70, 80, 60)],
                                                            (np.float32, np.float64)):
        X = g.standard_normal((rows, fan_in)).astype(dtype)
        W = g.standard_normal((fan_in, fan_out)).astype(dtype)
        Z, Y = np.empty((rows, fan_out), dtype), np.empty((rows, fan_out), dtype)
        cpu.dense_forward(X, W, np.zeros(fan_out, dtype), spec.RELU, {ACT_PARAM}, None, 0.0, 0, Z, Y)
        check(Z, X, W)
        dY = g.standard_normal((rows, fan_out)).astype(dtype)
        dW, db, dX = np.empty_like(W), np.empty(fan_out, dtype), np.empty_like(X)
        cpu.dense_backward(dY, X, W, Z, spec.IDENTITY, 0.0, None, 0.0, 0, dY, dW, db, None, dX)
        check(dW, X.T, dY)
        check(dX, dY, W.T)
        C = np.empty((fan_out, rows), dtype).T
        cpu.blas.matmul(X[::-1][::-1], W, C)
        check(C, X, W)
"""


def test_without_blas_every_op_takes_numpy(blas):
    """Where no library exports a CBLAS gemm, the ops run np.matmul; the kernels (which
    reference the BLAS symbols) still link, the symbols bound to a stand-in."""
    out = run_fresh("""
        from kernels.cpu import blas
        assert not blas.bind([]) and not blas.ENABLED and blas.library() is None
    """, CHECK_LAYER, """
        print("checked")
    """)
    assert "checked" in out


def test_lp64_blas_through_the_narrowing_trampoline(blas):
    """An LP64 library (32-bit sizes): scipy's bundled OpenBLAS, where installed."""
    scipy = pytest.importorskip("scipy")
    libraries = glob.glob(os.path.join(os.path.dirname(scipy.__file__) + ".libs", "*openblas*.so"))
    if not libraries:
        pytest.skip("this scipy bundles no OpenBLAS")
    out = run_fresh(f"""
        from kernels.cpu import blas
        assert blas.bind([{libraries[0]!r}]) and not blas.WIDE_INTS, blas.library()
        print(blas.gemm_symbols())
    """, CHECK_LAYER)
    assert "scipy_cblas_sgemm" in out and "64_" not in out


def mkl_library():
    from kernels.cpu import mkl
    path = mkl.installed_library()
    if path is None:
        pytest.skip('MKL is not installed (pip install "fusedense[mkl]")')
    return path


def test_mkl_takes_the_large_gemms(blas):
    """MKL's ILP64 gemm for large GEMMs, NumPy's BLAS for the rest, each checked."""
    path = mkl_library()
    out = run_fresh(f"""
        from kernels.cpu import blas
        assert blas.bind(large={path!r}) and blas.WIDE_INTS
        assert blas.library() != blas.large_library() == {path!r}
        print(blas.large_gemm_symbols())
    """, CHECK_LAYER)
    assert "cblas_sgemm_64" in out


ENVIRONMENT = """
    import os
    import kernels.cpu as cpu
    print(cpu.blas.large_library(), os.environ.get("MKL_THREADING_LAYER"),
          os.environ.get("GOMP_SPINCOUNT"), os.environ.get("OMP_WAIT_POLICY"))
"""


def run_with_blas_choice(choice):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MKL_THREADING_LAYER", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env["ENGINE_BLAS"] = choice
    return run_process(ENVIRONMENT, CHECK_LAYER, env=env)  # then every GEMM path


def test_engine_blas_numpy_keeps_numpys_blas_and_sleeping_threads(blas):
    """NumPy's BLAS for every GEMM, large ones too (the install without the mkl extra)."""
    result = run_with_blas_choice("numpy")
    assert result.returncode == 0, result.stderr[-3000:]
    large, layer, spin, policy = result.stdout.split()
    assert "mkl" not in large.lower() and (layer, spin, policy) == ("None", "None", "PASSIVE")


def test_engine_blas_mkl_shares_one_spinning_gnu_pool(blas):
    path = mkl_library()
    result = run_with_blas_choice("mkl")
    assert result.returncode == 0, result.stderr[-3000:]
    from kernels.cpu.mkl import SPIN_COUNT
    assert result.stdout.split() == [path, "GNU", SPIN_COUNT, "None"]


def test_engine_blas_rejects_an_unknown_choice(blas):
    result = run_with_blas_choice("atlas")
    assert result.returncode != 0 and "ENGINE_BLAS must be one of auto, mkl, numpy" in result.stderr


def test_engine_blas_mkl_without_mkl_says_how_to_install(monkeypatch):
    from kernels.cpu import mkl
    monkeypatch.setenv("ENGINE_BLAS", "mkl")
    monkeypatch.setattr(mkl, "installed_library", lambda: None)
    with pytest.raises(ImportError, match=r'pip install "fusedense\[mkl\]"'):
        mkl.chosen_library()
    monkeypatch.setenv("ENGINE_BLAS", "auto")
    assert mkl.chosen_library() is None  # auto: NumPy's BLAS, quietly


@pytest.mark.parametrize("vendor, chosen", [("GenuineIntel", True), ("AuthenticAMD", False), (None, False)])
def test_auto_takes_mkl_on_intel_processors_only(vendor, chosen, tmp_path, monkeypatch):
    """MKL's GEMMs measured slower than OpenBLAS's on an AMD EPYC (kernels.cpu.mkl): auto
    takes MKL where the processor is Intel's; ENGINE_BLAS=mkl takes it anywhere."""
    from kernels.cpu import mkl
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\n" + (f"vendor_id\t: {vendor}\n" if vendor else "") + "model name\t: X\n")
    monkeypatch.setattr(mkl, "installed_library", lambda: "/opt/libmkl_rt.so.2")
    reads = mkl.intel_processor
    monkeypatch.setattr(mkl, "intel_processor", lambda: reads(cpuinfo))
    monkeypatch.setenv("ENGINE_BLAS", "auto")
    assert (mkl.chosen_library() == "/opt/libmkl_rt.so.2") is chosen
    monkeypatch.setenv("ENGINE_BLAS", "mkl")
    assert mkl.chosen_library() == "/opt/libmkl_rt.so.2"


def test_mkl_is_left_alone_where_gnu_openmp_does_not_load(monkeypatch):
    """MKL's GNU layer needs libgomp: without it, auto keeps NumPy's BLAS and an explicit
    ENGINE_BLAS=mkl says what is missing (rather than MKL aborting at its first call)."""
    from kernels.cpu import mkl
    monkeypatch.setattr(mkl, "installed_library", lambda: "/opt/libmkl_rt.so.2")
    monkeypatch.setattr(mkl, "_gnu_openmp_loads", lambda: False)
    monkeypatch.setenv("ENGINE_BLAS", "auto")
    assert mkl.usable_library() is None
    monkeypatch.setenv("ENGINE_BLAS", "mkl")
    with pytest.raises(ImportError, match="libgomp"):
        mkl.usable_library()
    monkeypatch.setattr(mkl, "_gnu_openmp_loads", lambda: True)
    assert mkl.usable_library() == "/opt/libmkl_rt.so.2"
