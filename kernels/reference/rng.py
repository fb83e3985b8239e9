"""The counter-based hash of :mod:`kernels.rng` in NumPy: dropout keep bits and the
standard normal values of the input noise, the bits every backend must reproduce."""
import numpy as np

from .. import rng


def hash_words(n_elements, key_lo, key_hi):
    """The 32-bit hash of each element index 0..n-1 under the key halves (uint64 array)."""
    m = np.uint64(rng.MASK32)
    x = (np.arange(n_elements, dtype=np.uint64) * np.uint64(rng.INDEX_MULTIPLIER) + np.uint64(key_lo)) & m
    x ^= np.uint64(key_hi)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(rng.MIX_MULTIPLIER_1)) & m
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(rng.MIX_MULTIPLIER_2)) & m
    x ^= x >> np.uint64(15)
    return x


def keep_bits(n_elements, p, key):
    """The dropout keep bit of each element index 0..n-1."""
    return hash_words(n_elements, *rng.split_key(key)) >= np.uint64(rng.keep_threshold(p))


def noise_words(n_elements, key):
    """(h1, h2): the two hash words of each element index 0..n-1 a noise draw consumes."""
    key_lo, key_hi = rng.split_key(key)
    return (hash_words(n_elements, key_lo, key_hi),
            hash_words(n_elements, key_lo, key_hi ^ rng.NOISE_SECOND_STREAM))


def standard_normal(h1, h2):
    """Box-Muller in float64 (the formula of kernels.rng): z from the words h1, h2."""
    u1 = (h1.astype(np.float64) + 1.0) * 2.0**-32
    u2 = h2.astype(np.float64) * 2.0**-32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def standard_normals(n_elements, key):
    """The float64 standard normal value of each element index 0..n-1 under ``key``."""
    return standard_normal(*noise_words(n_elements, key))
