"""kernels.cuda.gemm: cuBLAS called directly, on the layouts it maps to cuBLAS's column-major
operands, with the precision setting, and recorded into a CUDA graph (what CuPy's own
matmul refuses).

The dense ops' GEMMs are tested against the reference in test_kernels_dense.py (C-order,
strided and transposed operands); here are the cases those do not reach: outputs that are
views or overlap an operand, operands with a dimension of 1 (both C and F contiguous), and
empty sums.
"""
import gc

import numpy as np
import pytest

import engine
from conftest import load_backend

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda():
    return load_backend("cuda")


def _close(actual, a, b, dtype):
    """Entries of a @ b to float32 or float64 rounding of the sum of their terms' sizes."""
    expected = a.astype(np.float64) @ b.astype(np.float64)
    terms = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(np.asarray(actual, np.float64) - expected) <= 4 * eps * (terms + 1e-30))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, k, m", [(1, 1, 1), (1, 9, 1), (5, 1, 3), (1, 4, 6), (6, 4, 1)])
@pytest.mark.parametrize("layout", ["C", "F"])
def test_operands_with_a_dimension_of_one(cuda, dtype, n, k, m, layout):
    rng = np.random.default_rng(n * 100 + k * 10 + m)
    a, b = rng.standard_normal((n, k)).astype(dtype), rng.standard_normal((k, m)).astype(dtype)
    if layout == "F":  # the transposes of C arrays, as the backward pass passes W.T and X.T
        a_d, b_d = cuda.to_device(a.T, dtype).T, cuda.to_device(b.T, dtype).T
    else:
        a_d, b_d = cuda.to_device(a, dtype), cuda.to_device(b, dtype)
    out = cuda.zeros((n, m), dtype)
    cuda.matmul(a_d, b_d, out)
    _close(cuda.to_host(out), a, b, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_strided_output_is_written_in_place_and_nowhere_else(cuda, dtype):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((7, 5)).astype(dtype), rng.standard_normal((5, 3)).astype(dtype)
    whole = cuda.to_device(np.full((7, 6), 9.0, dtype), dtype)
    cuda.matmul(cuda.to_device(a, dtype), cuda.to_device(b, dtype), whole[:, ::2])
    result = cuda.to_host(whole)
    _close(result[:, ::2], a, b, dtype)
    assert (result[:, 1::2] == 9.0).all()


def test_an_output_overlapping_an_operand_gets_the_product_of_the_values_before(cuda):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((6, 6)).astype(np.float32), rng.standard_normal((6, 6)).astype(np.float32)
    a_d = cuda.to_device(a, np.float32)
    cuda.matmul(a_d, cuda.to_device(b, np.float32), a_d)
    _close(cuda.to_host(a_d), a, b, np.float32)


def test_an_empty_sum_is_zero_and_an_empty_output_is_left_alone(cuda):
    out = cuda.to_device(np.full((3, 2), 5.0, np.float32), np.float32)
    cuda.matmul(cuda.zeros((3, 0), np.float32), cuda.zeros((0, 2), np.float32), out)
    assert (cuda.to_host(out) == 0).all()
    cuda.matmul(cuda.zeros((0, 4), np.float32), cuda.zeros((4, 2), np.float32), cuda.zeros((0, 2), np.float32))


def test_bad_shapes_and_dtypes_are_refused(cuda):
    a, b = cuda.zeros((3, 4), np.float32), cuda.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="do not match"):
        cuda.matmul(a, b, cuda.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        cuda.matmul(a, b, cuda.zeros((6,), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        cuda.matmul(a, b, cuda.zeros((3, 2), np.int32))


def test_tf32_precision_reaches_the_float32_gemm_and_not_the_float64(cuda):
    """set_float32_matmul_precision("high") lets cuBLAS round float32 inputs to TF32 (10
    mantissa bits), which moves products of random numbers by far more than FP32 rounding;
    "highest" gives the FP32 product back bit for bit, and float64 never changes."""
    import cupy

    if int(cupy.cuda.Device().compute_capability) < 80:
        pytest.skip("TF32 needs compute capability 8.0 or later")
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((64, 256)), rng.standard_normal((256, 32))
    products = {}
    try:
        for precision in ("highest", "high", "highest"):
            engine.set_float32_matmul_precision(precision)
            for dtype in (np.float32, np.float64):
                out = cuda.zeros((64, 32), dtype)
                cuda.matmul(cuda.to_device(a, dtype), cuda.to_device(b, dtype), out)
                products.setdefault((precision, np.dtype(dtype).name), []).append(cuda.to_host(out))
    finally:
        engine.set_float32_matmul_precision("highest")
    fp32_first, fp32_again = products[("highest", "float32")]
    (tf32,) = products[("high", "float32")]
    np.testing.assert_array_equal(fp32_first, fp32_again)
    assert np.abs(tf32 - fp32_first).max() > 1e-4  # FP32 rounding of these sums: about 1e-5
    for run in products[("high", "float64")] + products[("highest", "float64")][1:]:
        np.testing.assert_array_equal(run, products[("highest", "float64")][0])


def test_a_recorded_gemm_replays_on_the_operands_current_values(cuda):
    """The reason for this module: a CUDA graph records the cuBLAS call, and a replay
    reads the operands as they are at the replay."""
    rng = np.random.default_rng(4)
    a = cuda.to_device(rng.standard_normal((33, 17)), np.float32)
    b = cuda.to_device(rng.standard_normal((17, 9)), np.float32)
    out = cuda.zeros((33, 9), np.float32)
    cuda.matmul(a, b, out)  # eager first: the handle and its workspace exist before recording
    replay = cuda.capture(lambda: cuda.matmul(a, b, out))
    assert replay is not None
    fresh = rng.standard_normal((33, 17)).astype(np.float32)
    cuda.copy_into(a, cuda.to_device(fresh, np.float32))
    replay()
    _close(cuda.to_host(out), fresh, cuda.to_host(b), np.float32)


def test_a_replay_keeps_the_arrays_it_writes_allocated(cuda):
    """The graph holds addresses: were the recorded arrays freed when the caller let them
    go, the replay would write into the arrays CuPy's pool gives that memory to next."""
    def record():
        a = cuda.to_device(np.ones((64, 64)), np.float32)
        out = cuda.zeros((64, 64), np.float32)
        cuda.matmul(a, a, out)
        return cuda.capture(lambda: cuda.matmul(a, a, out))

    replay = record()
    gc.collect()
    fresh = [cuda.zeros((64, 64), np.float32) for _ in range(4)]
    replay()
    assert not any(cuda.to_host(array).any() for array in fresh)
