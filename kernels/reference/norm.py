"""Batch norm and layer norm as the epilogue of a dense layer's GEMM, in NumPy (see
kernels.spec.Backend.norm_forward / norm_backward for the formulas)."""
import numpy as np

from .. import spec
from .activations import activate, derivative
from .dense import scaled_mask


def _axis(kind):
    """The axis a kind's statistics run over: the rows (batch norm) or the units (layer)."""
    return 0 if kind == spec.NORM_BATCH else 1


def _statistics(kind, H, training, running_mean, running_var):
    """(mu, var) in float64, shaped to broadcast against H: the batch's or the row's (two
    passes over H in float64), or batch norm's running estimates in evaluation."""
    if kind == spec.NORM_BATCH and not training:
        return running_mean.astype(np.float64), running_var.astype(np.float64)
    axis = _axis(kind)
    h = H.astype(np.float64)
    mu = h.mean(axis=axis, keepdims=True)
    var = ((h - mu) ** 2).mean(axis=axis, keepdims=True)
    return mu, var


def _update_running(running, momentum, value):
    running[...] = ((1.0 - momentum) * running.astype(np.float64) + momentum * value).astype(running.dtype)


def norm_forward(kind, Z, b, gamma, beta, eps, training, momentum, running_mean, running_var,
                 act, act_param, slope, dropout_p, key, xhat, rstd, Y, alive=None):
    n = Z.shape[0]
    spec.check_norm(kind, training, n)
    dtype = Z.dtype
    H = Z + b
    mu, var = _statistics(kind, H, training, running_mean, running_var)
    if kind == spec.NORM_BATCH and training:
        _update_running(running_mean, momentum, mu.ravel())
        _update_running(running_var, momentum, var.ravel() * n / (n - 1))
    r = (1.0 / np.sqrt(var + eps)).astype(dtype)
    x = (H - mu.astype(dtype)) * r
    a = activate(act, act_param, slope, gamma * x + beta)
    y = a * scaled_mask(x.shape, dtype, dropout_p, key)
    if alive is not None:
        alive[(a > 0).any(axis=0)] = 1
    rstd[...] = r.ravel()
    xhat[...] = x
    Y[...] = y


def norm_backward(kind, dY, xhat, gamma, beta, rstd, act, act_param, slope, dropout_p, key,
                  dZ, db, dgamma, dbeta, dslope):
    frozen = spec.frozen_norm_backward(db, dgamma, dbeta, dslope)
    spec.check_norm(kind, False, dY.shape[0])
    A = gamma * xhat + beta
    upstream = dY * scaled_mask(dY.shape, dY.dtype, dropout_p, key)
    dA = upstream * derivative(act, act_param, slope, A)
    axis = _axis(kind)
    dxhat = dA * gamma
    r = rstd.reshape((1, -1) if axis == 0 else (-1, 1))
    dH = r * (dxhat - dxhat.mean(axis=axis, keepdims=True)
              - xhat * (dxhat * xhat).mean(axis=axis, keepdims=True))
    if not frozen:
        dgamma[...] = (dA * xhat).sum(axis=0)
        dbeta[...] = dA.sum(axis=0)
        if dslope is not None:
            dslope[...] = (upstream * np.minimum(A, 0)).sum(axis=0)
        db[...] = dH.sum(axis=0)
    dZ[...] = dH
