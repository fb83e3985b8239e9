"""Scalar math helpers that keep a compiled loop vectorisable and in the data's dtype.

This llvmlite has no vector math library (SVML), so ``math.exp`` in a loop is a scalar
libm call per element and stops the loop vectoriser. :func:`fast_exp` is an exp made of
arithmetic only (range reduction ``x = k ln2 + r``, a polynomial for ``exp(r)``, and
``2^k`` built from its bits), which LLVM inlines and vectorises: about 4x faster than
``math.exp`` on float32 here, and within 1 ulp of the exact value (float32 and float64)
over the whole range, subnormals, overflow to inf and NaN included. The input noise's
Box-Muller has the same problem with ``math.log`` and ``math.cos`` (29 ns an element):
:func:`log_positive` and :func:`cos_turns` are its log and cos made the same way, on
the domains the noise's uniforms take (3.5 ns an element with them).
"""
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .jit import scalar


def _bitcast(source, target):
    """An intrinsic that reinterprets the bits of a ``source`` scalar as a ``target`` one."""

    @intrinsic
    def bitcast(typingctx, value):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))
        return target(source), codegen

    return bitcast


_f32_from_bits = _bitcast(types.int32, types.float32)
_bits_from_f32 = _bitcast(types.float32, types.int32)
_f64_from_bits = _bitcast(types.int64, types.float64)
_bits_from_f64 = _bitcast(types.float64, types.int64)


# float32: Cephes expf's two-part ln2 (the high part has 9 significant bits, so k * LN2_HI
# is exact for every k reached) and its minimax polynomial for exp(r), |r| <= ln2/2.
_LOG2E_32 = np.float32(1.4426950408889634)
_SHIFTER_32 = np.float32(1.5 * 2.0**23)
_SHIFTER_BITS_32 = np.int32(np.array(_SHIFTER_32).view(np.int32))
_LN2_HI_32 = np.float32(0.693359375)
_LN2_LO_32 = np.float32(-2.12194440e-4)
_P32 = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                     4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_LO_32 = np.float32(-104.0)  # exp underflows to 0 below about -103.97
_HI_32 = np.float32(89.0)    # and overflows to inf above about 88.72
_ONE_32 = np.float32(1.0)
_BIAS_32 = np.int32(127)

# float64: Cephes exp's ln2 split and the Taylor polynomial to degree 13, whose remainder
# on |r| <= ln2/2 is below 5e-18 (a fortieth of an ulp).
_LOG2E_64 = 1.4426950408889634
_SHIFTER_64 = 1.5 * 2.0**52
_SHIFTER_BITS_64 = np.int64(np.array(_SHIFTER_64).view(np.int64))
_LN2_HI_64 = 6.93145751953125e-1
_LN2_LO_64 = 1.42860682030941723212e-6
(_T13, _T12, _T11, _T10, _T9, _T8, _T7, _T6, _T5, _T4, _T3, _T2) = (
    1.0 / math.factorial(n) for n in range(13, 1, -1))
_LO_64 = -746.0
_HI_64 = 710.0


@scalar
def _exp32(x):
    """exp(x) for float32 from arithmetic only; see the module docstring.

    Compiled without fastmath on purpose: reassociation would fold the round-to-integer
    shifter trick ``(y + S) - S`` into ``y``.
    """
    # Comparisons are false for NaN, which so flows through to the result untouched.
    if x < _LO_32:
        x = _LO_32
    if x > _HI_32:
        x = _HI_32
    shifted = x * _LOG2E_32 + _SHIFTER_32
    kf = shifted - _SHIFTER_32           # round(x / ln2), exactly, as a float
    k = _bits_from_f32(shifted) - _SHIFTER_BITS_32  # the same integer, with no float->int cast
    r = x - kf * _LN2_HI_32
    r = r - kf * _LN2_LO_32
    p0, p1, p2, p3, p4, p5 = _P32
    p = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
    p = p * (r * r) + r + _ONE_32
    # 2^k as two factors, so that both stay normal numbers when the result is subnormal.
    k1 = k >> 1
    k2 = k - k1
    return p * _f32_from_bits((k1 + _BIAS_32) << 23) * _f32_from_bits((k2 + _BIAS_32) << 23)


@scalar
def _exp64(x):
    """exp(x) for float64 from arithmetic only (see :func:`_exp32`)."""
    if x < _LO_64:
        x = _LO_64
    if x > _HI_64:
        x = _HI_64
    shifted = x * _LOG2E_64 + _SHIFTER_64
    kf = shifted - _SHIFTER_64
    k = _bits_from_f64(shifted) - _SHIFTER_BITS_64
    r = x - kf * _LN2_HI_64
    r = r - kf * _LN2_LO_64
    p = (((((((((((_T13 * r + _T12) * r + _T11) * r + _T10) * r + _T9) * r + _T8) * r + _T7) * r
              + _T6) * r + _T5) * r + _T4) * r + _T3) * r + _T2)
    p = p * (r * r) + r + 1.0
    k1 = k >> 1
    k2 = k - k1
    return p * _f64_from_bits((k1 + 1023) << 52) * _f64_from_bits((k2 + 1023) << 52)


# ln of a positive normal float64: x = 2^e m with m in [sqrt(1/2), sqrt(2)), and
# ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716, by its series
# 2 (s + s^3/3 + s^5/5 + ...) to s^25, whose remainder is below 1e-20 of the sum.
_MANTISSA_BITS_64 = np.int64((1 << 52) - 1)
_ONE_BITS_64 = np.int64(1023 << 52)
_SQRT2 = math.sqrt(2.0)
(_A25, _A23, _A21, _A19, _A17, _A15, _A13, _A11, _A9, _A7, _A5, _A3) = (
    1.0 / n for n in range(25, 2, -2))


@scalar(forceinline=True)
def log_positive(x):
    """ln(x) for a positive normal float64, from arithmetic only (vectorisable, unlike
    ``math.log``), within 2 ulp of the exact value (tests/test_kernels_augment.py)."""
    bits = _bits_from_f64(x)
    e = (bits >> 52) - 1023
    m = _f64_from_bits((bits & _MANTISSA_BITS_64) | _ONE_BITS_64)  # in [1, 2)
    if m > _SQRT2:
        m = m * 0.5
        e = e + 1
    s = (m - 1.0) / (m + 1.0)  # m - 1 is exact
    w = s * s
    p = ((((((((((_A25 * w + _A23) * w + _A21) * w + _A19) * w + _A17) * w + _A15) * w + _A13) * w
              + _A11) * w + _A9) * w + _A7) * w + _A5) * w + _A3
    ke = np.float64(e)
    # ln 2 in two parts (exp's): e * _LN2_HI_64 is exact for every exponent
    return ke * _LN2_HI_64 + (2.0 * s + (2.0 * s) * (w * p) + ke * _LN2_LO_64)


# cos(2 pi t) by symmetry on t in [0, 1/8], x = 2 pi t in [0, pi/4], and the Taylor series
# of cos x and sin x to x^18 and x^19, whose remainders are below 1e-20.
_TWO_PI = 2.0 * math.pi
(_C18, _C16, _C14, _C12, _C10, _C8, _C6, _C4, _C2) = (
    (-1) ** k / math.factorial(2 * k) for k in range(9, 0, -1))
(_S19, _S17, _S15, _S13, _S11, _S9, _S7, _S5, _S3) = (
    (-1) ** k / math.factorial(2 * k + 1) for k in range(9, 0, -1))


@scalar(forceinline=True)
def cos_turns(t):
    """cos(2 pi t) for a float64 t in [0, 1) that is a multiple of 2^-32 (the noise's
    uniforms), from arithmetic only (vectorisable, unlike ``math.cos``), within 3 ulp,
    or 2e-16 absolute near its zeros (tests/test_kernels_augment.py). The folds of t
    below are exact for such t: cos(2 pi t) = cos(2 pi (1 - t)) = -cos(2 pi (1/2 - t)),
    and cos(2 pi t) = sin(2 pi (1/4 - t))."""
    t = min(t, 1.0 - t)  # [0, 1/2]
    negate = t > 0.25
    if negate:
        t = 0.5 - t  # [0, 1/4]
    use_sin = t > 0.125
    if use_sin:
        t = 0.25 - t  # [0, 1/8]
    x = t * _TWO_PI
    w = x * x
    c = ((((((((_C18 * w + _C16) * w + _C14) * w + _C12) * w + _C10) * w + _C8) * w + _C6) * w + _C4) * w
         + _C2) * w + 1.0
    s = x + x * w * ((((((((_S19 * w + _S17) * w + _S15) * w + _S13) * w + _S11) * w + _S9) * w + _S7) * w
                      + _S5) * w + _S3)
    r = s if use_sin else c
    return -r if negate else r


def fast_exp(x):
    """exp(x) in the dtype of ``x``, vectorisable inside compiled loops."""
    return math.exp(x)


@overload(fast_exp)
def _fast_exp(x):
    if x == types.float32:
        return lambda x: _exp32(x)
    if x == types.float64:
        return lambda x: _exp64(x)
    return None


@intrinsic
def maximum(typingctx, a, b):
    """max(a, b) with NaN winning, as np.maximum: LLVM's ``llvm.maximum``.

    A ``v if v > m else m`` loop is an ordered chain LLVM will not vectorise without
    'nnan'; this intrinsic's reduction it does vectorise (4x faster on a row of 1000).
    """
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        ty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maximum", [ty], ir.FunctionType(ty, [ty, ty]))
        return builder.call(fn, args)
    return a(a, b), codegen


def cast_like(value, like):
    """``value`` converted to the scalar type of ``like``.

    Literal constants in compiled code are float64 and would promote float32 arithmetic;
    casting them keeps a float32 kernel in float32, as the reference computes it.
    """
    return type(like)(value)


@overload(cast_like)
def _cast_like(value, like):
    if isinstance(like, types.Float):
        target = like
        return lambda value, like: target(value)
    return None


def cast_to(value, array):
    """``value`` converted to the dtype of the float array ``array``.

    Lets wrappers pass Python floats (the cheapest arguments to dispatch) and kernels
    round them to the data's dtype, as the reference rounds its scalars.
    """
    return array.dtype.type(value)


@overload(cast_to)
def _cast_to(value, array):
    if isinstance(array, types.Array) and isinstance(array.dtype, types.Float):
        target = array.dtype
        return lambda value, array: target(value)
    return None


@scalar
def clear(row):
    """``row[:] = 0`` for a 1-D view, as a plain loop (numba's generic slice assignment
    compiles to several times more code)."""
    for j in range(row.size):
        row[j] = 0
