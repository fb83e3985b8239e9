"""The hash of :mod:`kernels.rng` as compiled scalar functions: dropout keep bits and the
standard normal values of the input noise."""
import math

import numpy as np

from .. import rng
from .jit import inline, scalar
from .vecmath import cast_like, cast_to, cos_turns, log_positive

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
def hash_word(index, key_lo, key_hi):
    """The lowbias32 hash of kernels.rng of element ``index`` (taken modulo 2^32, as the
    hash's first multiply does anyway) under the uint32 key halves."""
    x = _U32(_U32(index) * _INDEX_MULTIPLIER + key_lo)
    x = _U32(x ^ key_hi)
    x = _U32(x ^ (x >> _SHIFT_16))
    x = _U32(x * _MIX_MULTIPLIER_1)
    x = _U32(x ^ (x >> _SHIFT_15))
    x = _U32(x * _MIX_MULTIPLIER_2)
    return _U32(x ^ (x >> _SHIFT_15))


@scalar
def keep_bit(index, key_lo, key_hi, threshold):
    """True when element ``index`` is kept: its hash >= threshold."""
    return hash_word(index, key_lo, key_hi) >= threshold


NO_DROPOUT = (False, 0, 0, 0, 1.0)
"""mask_args for p = 0: every element kept, scale exactly 1 (and no hashing)."""


def mask_args(dropout_p, key, dtype):
    """(dropout, key_lo, key_hi, threshold, scale) for the compiled kernels, as Python
    scalars (the cheapest to pass); kernels convert them with :func:`mask_constants`.

    ``scale = 1 / (1 - p)`` is rounded in ``dtype`` as the reference divides by it there
    (exact as a Python float, so the kernel's cast back changes nothing); ``dropout`` is
    False when no element can drop and the scale is 1: a p > 0 so small that nothing
    drops still scales by 1 / (1 - p). With p = 0 the key is unused and may be None.
    """
    if dropout_p == 0:
        return NO_DROPOUT  # the common case, without the Python arithmetic
    key_lo, key_hi = rng.split_key(int(key))
    threshold = rng.keep_threshold(float(dropout_p))
    one = dtype.type(1.0)
    scale = float(one / dtype.type(1.0 - dropout_p))
    return threshold > 0 or scale != 1, key_lo, key_hi, threshold, scale


@scalar
def mask_constants(key_lo, key_hi, threshold, scale, like):
    """The uint32 key halves and threshold, and the scale in the dtype of array ``like``."""
    return _U32(key_lo), _U32(key_hi), _U32(threshold), cast_to(scale, like)


@inline
def mask_value(dropout, index, key_lo, key_hi, threshold, scale):
    """m / (1 - p) of element ``index``; exactly 1 (and no hashing) without dropout.
    Inlined by numba: as a function of its own, LLVM left the loops calling it scalar."""
    if not dropout:
        return cast_like(1.0, scale)
    return scale if keep_bit(index, key_lo, key_hi, threshold) else cast_like(0.0, scale)


@scalar(forceinline=True)
def noise_value(index, key_lo, key_hi, second_hi):
    """The float64 standard normal value of element ``index`` (Box-Muller of kernels.rng on
    the hash words under ``key_hi`` and ``second_hi = key_hi ^ NOISE_SECOND_STREAM``).

    Its log and cos are vecmath's, from arithmetic only, so that the noise's loop
    vectorises: with libm's, an element cost 29 ns here, 3.5 now. All three are inlined
    by force: left to LLVM they stayed calls, and the loop scalar (24 ns an element)."""
    u1 = (np.float64(hash_word(index, key_lo, key_hi)) + 1.0) * 2.0**-32
    u2 = np.float64(hash_word(index, key_lo, second_hi)) * 2.0**-32
    return math.sqrt(-2.0 * log_positive(u1)) * cos_turns(u2)


def noise_args(key):
    """(key_lo, key_hi, second_hi) of a noise ``key``, as uint32 for the compiled kernels."""
    key_lo, key_hi = rng.split_key(int(key))
    return _U32(key_lo), _U32(key_hi), _U32(key_hi ^ rng.NOISE_SECOND_STREAM)
