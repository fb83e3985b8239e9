"""Activation functions and their derivatives as compiled scalar functions, by code.

Same formulas as :mod:`kernels.reference.activations`, element by element and in the
dtype of ``z`` (constants are cast with :func:`cast_like` so a float32 kernel rounds as
the reference does). ``alpha`` is the leaky slope or the elu alpha, ``slope`` the prelu
slope of this element's unit; both have the dtype of ``z``.

Kernels are compiled per activation code (see kernels.cpu.dense), so in each one the
dispatch of :func:`activate` and :func:`derivative` folds to a single call. NaN
propagates as in NumPy: every test that selects a branch is written so that NaN falls
into a branch that carries it through (``z > 0`` false, then ``alpha * expm1(NaN)``...).
"""
import math

from .. import spec
from .jit import inline, scalar
from .vecmath import cast_like, fast_exp

_SQRT_2 = math.sqrt(2.0)
_SQRT_2_PI = math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715
_GELU_TANH_3C = 3.0 * _GELU_TANH_C

IDENTITY, RELU, LEAKY_RELU, ELU, SELU, GELU = (spec.IDENTITY, spec.RELU, spec.LEAKY_RELU,
                                               spec.ELU, spec.SELU, spec.GELU)
GELU_TANH, SILU, SOFTPLUS, TANH, SIGMOID, PRELU = (spec.GELU_TANH, spec.SILU, spec.SOFTPLUS,
                                                  spec.TANH, spec.SIGMOID, spec.PRELU)
ACTIVATION_CODES = range(12)


# One small compiled function per activation (and derivative), shared by every kernel.
# LLVM inlines the dispatch into a kernel, folds it on the kernel's constant code and
# inlines and vectorises the one call left. (Having numba inline the formulas into each
# kernel instead made compilation twice as slow for the same machine code.)
@scalar
def sigmoid(z):
    """1 / (1 + exp(-z)) with exp of -|z| only, so neither branch overflows."""
    one = cast_like(1.0, z)
    e = fast_exp(-abs(z))
    return one / (one + e) if z >= 0 else e / (one + e)


@scalar
def _std_normal_cdf(z):
    half = cast_like(0.5, z)
    return half * (cast_like(1.0, z) + math.erf(z / cast_like(_SQRT_2, z)))


@scalar
def _relu(z):
    zero = cast_like(0.0, z)
    return zero if z <= zero else z


@scalar
def _relu_grad(z):
    return cast_like(1.0, z) if z > 0 else cast_like(0.0, z)


@scalar
def _leaky(z, slope):
    """leaky_relu and prelu, with the slope of this unit."""
    return z if z > 0 else slope * z


@scalar
def _leaky_grad(z, slope):
    return cast_like(1.0, z) if z > 0 else slope


@scalar
def _elu(z, alpha):
    return z if z > 0 else alpha * math.expm1(z)


@scalar
def _elu_grad(z, alpha):
    return cast_like(1.0, z) if z > 0 else alpha * fast_exp(z)


@scalar
def _selu(z):
    neg = cast_like(spec.SELU_ALPHA, z) * math.expm1(z)
    return cast_like(spec.SELU_SCALE, z) * (z if z > 0 else neg)


@scalar
def _selu_grad(z):
    neg = cast_like(spec.SELU_ALPHA, z) * fast_exp(z)
    return cast_like(spec.SELU_SCALE, z) * (cast_like(1.0, z) if z > 0 else neg)


@scalar
def _gelu(z):
    return z * _std_normal_cdf(z)


@scalar
def _gelu_grad(z):
    pdf = fast_exp(cast_like(-0.5, z) * z * z) / cast_like(_SQRT_2_PI, z)
    return _std_normal_cdf(z) + z * pdf


@scalar
def _gelu_tanh(z):
    inner = cast_like(_SQRT_2_OVER_PI, z) * (z + cast_like(_GELU_TANH_C, z) * z * z * z)
    return cast_like(0.5, z) * z * (cast_like(1.0, z) + math.tanh(inner))


@scalar
def _gelu_tanh_grad(z):
    one = cast_like(1.0, z)
    half = cast_like(0.5, z)
    c = cast_like(_SQRT_2_OVER_PI, z)
    t = math.tanh(c * (z + cast_like(_GELU_TANH_C, z) * z * z * z))
    inner_grad = c * (one + cast_like(_GELU_TANH_3C, z) * z * z)
    return half * (one + t) + half * z * (one - t * t) * inner_grad


@scalar
def _silu(z):
    return z * sigmoid(z)


@scalar
def _silu_grad(z):
    one = cast_like(1.0, z)
    s = sigmoid(z)
    return s * (one + z * (one - s))


@scalar
def _softplus(z):
    if z > cast_like(spec.SOFTPLUS_THRESHOLD, z):
        return z
    return (z if z > 0 else cast_like(0.0, z)) + math.log1p(fast_exp(-abs(z)))


@scalar
def _softplus_grad(z):
    return cast_like(1.0, z) if z > cast_like(spec.SOFTPLUS_THRESHOLD, z) else sigmoid(z)


@scalar
def _tanh_grad(z):
    t = math.tanh(z)
    return cast_like(1.0, z) - t * t


@scalar
def _sigmoid_grad(z):
    s = sigmoid(z)
    return s * (cast_like(1.0, z) - s)


@scalar
def _evaluate(act, grad, alpha, slope, z):
    """act(z), or act'(z) when ``grad``, for activation code ``act`` (kernels.spec)."""
    if act == IDENTITY:
        return cast_like(1.0, z) if grad else z
    if act == RELU:
        return _relu_grad(z) if grad else _relu(z)
    if act == LEAKY_RELU:
        return _leaky_grad(z, alpha) if grad else _leaky(z, alpha)
    if act == PRELU:
        return _leaky_grad(z, slope) if grad else _leaky(z, slope)
    if act == ELU:
        return _elu_grad(z, alpha) if grad else _elu(z, alpha)
    if act == SELU:
        return _selu_grad(z) if grad else _selu(z)
    if act == GELU:
        return _gelu_grad(z) if grad else _gelu(z)
    if act == GELU_TANH:
        return _gelu_tanh_grad(z) if grad else _gelu_tanh(z)
    if act == SILU:
        return _silu_grad(z) if grad else _silu(z)
    if act == SOFTPLUS:
        return _softplus_grad(z) if grad else _softplus(z)
    if act == TANH:
        return _tanh_grad(z) if grad else math.tanh(z)
    return _sigmoid_grad(z) if grad else sigmoid(z)  # SIGMOID; codes are checked in Python


@inline
def activate(act, alpha, slope, z):
    """act(z) for activation code ``act``."""
    return _evaluate(act, False, alpha, slope, z)


@inline
def derivative(act, alpha, slope, z):
    """act'(z) for activation code ``act``; the subgradient at 0 is the left one."""
    return _evaluate(act, True, alpha, slope, z)


def check_code(act):
    """``act`` as an int, or ValueError: compiled kernels do not validate codes."""
    act = int(act)
    if act not in ACTIVATION_CODES:
        raise ValueError(f"unknown activation code {act}")
    return act
