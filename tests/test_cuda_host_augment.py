"""The input noise's device math (kernels/cuda/rng.cuh), built as host C++
(tests/cuda_host.py), against kernels.reference: the two hash words of every element bit
for bit, and the Box-Muller value to the C library's log and cos against NumPy's.
The kernels themselves run only where a GPU is, in tests/test_kernels_augment.py."""
import math

import numpy as np
import pytest

from cuda_host import build, call
from kernels import rng
from kernels.reference import rng as reference_rng

KEYS = [0, 1, 2**32 - 1, 2**32, rng.noise_key(0, 1), rng.noise_key(1234, 77), 2**64 - 1]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return build("cuda_host_augment.cpp", tmp_path_factory)


def host_noise(lib, indices, key):
    """(h1, h2, z) of each index under ``key``, from the host build of rng.cuh."""
    key_lo, key_hi = rng.split_key(key)
    words, z = np.zeros((indices.size, 2), np.uint32), np.zeros(indices.size)
    call(lib, "noise_values", np.ascontiguousarray(indices, np.uint64), indices.size, key_lo, key_hi,
         key_hi ^ rng.NOISE_SECOND_STREAM, words, z)
    return words[:, 0], words[:, 1], z


@pytest.mark.parametrize("key", KEYS)
def test_noise_words_and_values_match_the_reference(lib, key):
    n = 100_003
    h1, h2, z = host_noise(lib, np.arange(n, dtype=np.uint64), key)
    ref_h1, ref_h2 = reference_rng.noise_words(n, key)
    np.testing.assert_array_equal(h1, ref_h1)
    np.testing.assert_array_equal(h2, ref_h2)
    # glibc's log and cos against NumPy's, each within an ulp or so of the exact value: z
    # agrees to a few float64 roundings of its size (|z| <= 6.66).
    np.testing.assert_allclose(z, reference_rng.standard_normals(n, key), rtol=1e-14, atol=1e-14)


def python_normal(h1, h2):
    """Box-Muller of kernels/rng.py's docstring, in Python floats."""
    u1, u2 = (h1 + 1) / 2**32, h2 / 2**32
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)


def test_transform_at_the_extreme_words(lib):
    """u1 = 2^-32 (h1 = 0) gives the largest |z|, sqrt(64 ln 2); u1 = 1 (h1 = 2^32 - 1) gives
    0; u2 = 0 and 1/2 give cos = +-1."""
    h1 = np.array([0, 0, 2**32 - 1, 2**31, 12345], np.uint32)
    h2 = np.array([0, 2**31, 0, 2**30, 2**32 - 1], np.uint32)
    z = np.zeros(h1.size)
    call(lib, "standard_normals", h1, h2, h1.size, z)
    expected = [python_normal(int(a), int(b)) for a, b in zip(h1, h2)]
    np.testing.assert_allclose(z, expected, rtol=1e-15, atol=1e-15)
    assert z[0] == pytest.approx(math.sqrt(64 * math.log(2)), rel=1e-15)
    assert z[1] == pytest.approx(-math.sqrt(64 * math.log(2)), rel=1e-15)
    assert z[2] == 0.0


@pytest.mark.parametrize("key", KEYS[:3])
def test_indices_past_32_bits_repeat_the_low_ones(lib, key):
    """Indices are hashed mod 2^32, as the dropout mask's."""
    low = np.array([0, 1, 2, 12345, 2**31, 2**32 - 1], np.uint64)
    high = low + np.uint64(2**32)
    for got, want in zip(host_noise(lib, high, key), host_noise(lib, low, key)):
        np.testing.assert_array_equal(got, want)
