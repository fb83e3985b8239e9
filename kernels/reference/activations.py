"""Activation functions and their derivatives, in NumPy, by activation code."""
import math

import numpy as np

from .. import spec

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(z):
    # exp of a non-positive argument only, so large |z| neither overflows nor warns.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _std_normal_cdf(z):
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)).astype(z.dtype))


def activate(act, alpha, slope, z):
    """act(z) elementwise; ``alpha`` is the leaky slope or the elu alpha."""
    if act == spec.IDENTITY:
        return z.copy()
    if act == spec.RELU:
        return np.maximum(z, 0)
    if act == spec.LEAKY_RELU:
        return np.where(z > 0, z, alpha * z)
    if act == spec.PRELU:
        return np.where(z > 0, z, slope * z)
    if act == spec.ELU:
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))
    if act == spec.SELU:
        return spec.SELU_SCALE * np.where(z > 0, z, spec.SELU_ALPHA * np.expm1(np.minimum(z, 0)))
    if act == spec.GELU:
        return z * _std_normal_cdf(z)
    if act == spec.GELU_TANH:
        return 0.5 * z * (1.0 + np.tanh(_SQRT_2_OVER_PI * (z + _GELU_TANH_C * z**3)))
    if act == spec.SILU:
        return z * _sigmoid(z)
    if act == spec.SOFTPLUS:
        return np.where(z > spec.SOFTPLUS_THRESHOLD, z, np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))))
    if act == spec.TANH:
        return np.tanh(z)
    if act == spec.SIGMOID:
        return _sigmoid(z)
    raise ValueError(f"unknown activation code {act}")


def derivative(act, alpha, slope, z):
    """act'(z) elementwise (the subgradient at 0 is taken from the left: 0 for relu)."""
    if act == spec.IDENTITY:
        return np.ones_like(z)
    if act == spec.RELU:
        return (z > 0).astype(z.dtype)
    if act == spec.LEAKY_RELU:
        return np.where(z > 0, 1.0, alpha).astype(z.dtype)
    if act == spec.PRELU:
        return np.where(z > 0, 1.0, slope).astype(z.dtype)
    if act == spec.ELU:
        return np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0))).astype(z.dtype)
    if act == spec.SELU:
        return spec.SELU_SCALE * np.where(z > 0, 1.0, spec.SELU_ALPHA * np.exp(np.minimum(z, 0))).astype(z.dtype)
    if act == spec.GELU:
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        return _std_normal_cdf(z) + z * pdf
    if act == spec.GELU_TANH:
        t = np.tanh(_SQRT_2_OVER_PI * (z + _GELU_TANH_C * z**3))
        return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_C * z * z)
    if act == spec.SILU:
        s = _sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    if act == spec.SOFTPLUS:
        return np.where(z > spec.SOFTPLUS_THRESHOLD, 1.0, _sigmoid(z)).astype(z.dtype)
    if act == spec.TANH:
        return 1.0 - np.tanh(z) ** 2
    if act == spec.SIGMOID:
        s = _sigmoid(z)
        return s * (1.0 - s)
    raise ValueError(f"unknown activation code {act}")
