"""Dense layer forward/backward, dropout masks and output functions, in NumPy."""
import numpy as np

from .. import spec
from .activations import activate, derivative
from .rng import keep_bits


def scaled_mask(shape, dtype, p, key):
    """m / (1 - p) of every element of an array of ``shape`` (all ones when p == 0)."""
    if p == 0.0:
        return np.ones(shape, dtype=dtype)
    keep = keep_bits(int(np.prod(shape)), p, key).reshape(shape)
    return keep.astype(dtype) / dtype.type(1.0 - p)


def dropout_mask(dropout_p, key, out):
    out[...] = scaled_mask(out.shape, out.dtype, dropout_p, key)


def dense_forward(X, W, b, act, act_param, slope, dropout_p, key, Z, Y, alive=None):
    z = X @ W + b
    a = activate(act, act_param, slope, z)
    y = a * scaled_mask(z.shape, z.dtype, dropout_p, key)
    if alive is not None:
        alive[(a > 0).any(axis=0)] = 1
    Z[...] = z
    Y[...] = y


def dense_backward(dY, X, W, Z, act, act_param, slope, dropout_p, key, dZ, dW, db, dslope, dX):
    frozen = spec.frozen_backward(dW, db, dslope)
    upstream = dY * scaled_mask(dY.shape, dY.dtype, dropout_p, key)
    if dslope is not None:
        dslope[...] = (upstream * np.minimum(Z, 0)).sum(axis=0)
    dz = upstream * derivative(act, act_param, slope, Z)
    dZ[...] = dz
    if not frozen:
        db[...] = dz.sum(axis=0)
        dW[...] = X.T @ dz
    if dX is not None:
        dX[...] = dz @ W.T


def apply_output(kind, X, out):
    if kind == spec.OUTPUT_NONE:
        out[...] = X
    elif kind == spec.OUTPUT_SIGMOID:
        out[...] = activate(spec.SIGMOID, 0.0, None, X)
    elif kind == spec.OUTPUT_SOFTMAX:
        e = np.exp(X - X.max(axis=1, keepdims=True))
        out[...] = e / e.sum(axis=1, keepdims=True)
    else:
        raise ValueError(f"unknown output code {kind}")


def matmul(a, b, out):
    np.matmul(a, b, out=out)
