"""The array ops of the fast backends (to_device, to_host, copy_into, take_rows) against
plain NumPy indexing, with data moved through each backend's own arrays."""
import numpy as np
import pytest


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
