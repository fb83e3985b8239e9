"""The array ops of the fast backends (to_device, to_host, copy_into, take_rows) against
plain NumPy indexing, with data moved through each backend's own arrays; all_finite of
every backend, the reference's included, against verdicts known by construction."""
import numpy as np
import pytest

from conftest import FAST_BACKENDS, load_backend


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 3), (5,)], ids=str)
def test_take_rows(fast, dtype, shape):
    g = np.random.default_rng(0)
    src = g.standard_normal(shape).astype(dtype)
    labels = g.integers(0, 10, shape[0])
    index = g.permutation(shape[0])[: max(1, shape[0] // 2 + 1)]
    # Repeated rows are allowed: a gather, not a permutation.
    index = np.concatenate([index, index[:1]])
    out = fast.empty((len(index),) + shape[1:], dtype)
    fast.take_rows(fast.to_device(src, dtype), fast.to_device(index, np.int64), out)
    np.testing.assert_array_equal(fast.to_host(out), src[index])
    out_labels = fast.empty(len(index), np.int64)
    fast.take_rows(fast.to_device(labels, np.int64), fast.to_device(index, np.int64), out_labels)
    np.testing.assert_array_equal(fast.to_host(out_labels), labels[index])


def test_round_trip_and_copy_into(fast, dtype):
    host = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    device = fast.to_device(host, dtype)
    np.testing.assert_array_equal(fast.to_host(device), host.astype(dtype))
    target = fast.zeros((3, 4), dtype)
    fast.copy_into(target, host)  # from the host, cast to the target's dtype
    np.testing.assert_array_equal(fast.to_host(target), host.astype(dtype))
    other = fast.zeros((3, 4), dtype)
    fast.copy_into(other, device)  # between backend arrays
    np.testing.assert_array_equal(fast.to_host(other), host.astype(dtype))


# Shapes for all_finite: one element, odd sizes, and 2^20 + 3 elements, past the numba
# backend's threshold for its parallel kernel (kernels.cpu.jit.PARALLEL_MIN_WORK, 2^17, of
# work at kernels.cpu.optim.NORMS_WORK_PER_ELEMENT, 1/8 an element).
FINITE_SHAPES = [(1, 1), (7,), (3, 5), (129, 65), (1 << 20) + 3]
# The reference and each fast backend, once each.
ALL_BACKENDS = [pytest.param("reference")] + FAST_BACKENDS


@pytest.mark.parametrize("name", ALL_BACKENDS)
@pytest.mark.parametrize("shape", FINITE_SHAPES, ids=str)
def test_all_finite(name, dtype, shape):
    """spec.Backend.all_finite against verdicts known by construction: standard normal
    values (finite), then one NaN, inf or -inf at the first, middle or last element, or
    the dtype's largest finite value there (finite); on the backend's array, on a host
    array, and on strided views (a transposed array, every other element) that hold the
    spoiled element or leave it out."""
    b = load_backend(name)
    values = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    assert b.all_finite(b.to_device(values, dtype)) is True
    assert b.all_finite(values) is True
    n = values.size
    for position in sorted({0, n // 2, n - 1}):
        for bad, finite in ((np.nan, False), (np.inf, False), (-np.inf, False), (np.finfo(dtype).max, True)):
            spoiled = values.copy()
            spoiled.reshape(-1)[position] = bad
            on_device = b.to_device(spoiled, dtype)
            assert b.all_finite(on_device) is finite, (position, bad)
            assert b.all_finite(spoiled) is finite, (position, bad)
            if spoiled.ndim == 2:
                assert b.all_finite(on_device.T) is finite, (position, bad)
            flat = on_device.reshape(-1)
            assert b.all_finite(flat[position % 2::2]) is finite, (position, bad)  # holds it
            if n > 1:
                assert b.all_finite(flat[1 - position % 2::2]) is True, (position, bad)  # leaves it out


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_all_finite_of_integers_and_empty_arrays(name):
    """Integer and bool arrays hold no NaN or inf; an empty array has nothing that is not finite."""
    b = load_backend(name)
    assert b.all_finite(b.to_device(np.array([[-(2**62), 3]]), np.int64)) is True
    assert b.all_finite(np.array([True, False])) is True
    assert b.all_finite(b.to_device(np.empty((0, 4)), np.float32)) is True
