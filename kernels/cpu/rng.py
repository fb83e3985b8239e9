"""The dropout keep bit of :mod:`kernels.rng`, as a compiled scalar function."""
import functools

import numpy as np
from .. import rng
from .jit import scalar

# uint32 throughout, truncating after each operation: numba computes with 64-bit
# integers, and the truncations let LLVM use 32-bit vector multiplies (the 64-bit ones
# made the dropout mask 1.7x slower).
_U32 = np.uint32
_INDEX_MULTIPLIER = _U32(rng.INDEX_MULTIPLIER)
_MIX_MULTIPLIER_1 = _U32(rng.MIX_MULTIPLIER_1)
_MIX_MULTIPLIER_2 = _U32(rng.MIX_MULTIPLIER_2)
_SHIFT_16 = _U32(16)
_SHIFT_15 = _U32(15)


@scalar
def keep_bit(index, key_lo, key_hi, threshold):
    """True when element ``index`` is kept: the lowbias32 hash of kernels.rng >= threshold
    (``index`` is taken modulo 2^32, as the hash's first multiply does anyway)."""
    x = _U32(_U32(index) * _INDEX_MULTIPLIER + key_lo)
    x = _U32(x ^ key_hi)
    x = _U32(x ^ (x >> _SHIFT_16))
    x = _U32(x * _MIX_MULTIPLIER_1)
    x = _U32(x ^ (x >> _SHIFT_15))
    x = _U32(x * _MIX_MULTIPLIER_2)
    x = _U32(x ^ (x >> _SHIFT_15))
    return x >= threshold


@functools.cache
def _no_dropout_args(dtype):
    one = dtype.type(1.0)
    return np.uint32(0), np.uint32(0), np.uint32(0), one / one


def mask_args(dropout_p, key, dtype):
    """(key_lo, key_hi, threshold, scale) for the compiled kernels.

    ``scale = 1 / (1 - p)`` is rounded in ``dtype`` as the reference divides by it there;
    with ``p == 0`` the threshold is 0, every element is kept and the scale is exactly 1
    (the key is then unused and may be None).
    """
    if dropout_p == 0:
        return _no_dropout_args(dtype)  # the common case, without the Python arithmetic
    key_lo, key_hi = rng.split_key(int(key))
    one = dtype.type(1.0)
    return (np.uint32(key_lo), np.uint32(key_hi), np.uint32(rng.keep_threshold(float(dropout_p))),
            one / dtype.type(1.0 - dropout_p))
