"""Batch norm and layer norm as the epilogue of a dense layer's GEMM (see kernels.spec:
Backend.norm_forward, norm_backward), compiled per kind and activation code.

Forward, ONE compiled call: the statistics of H = Z + b in float64 by two passes (the
mean, then the squared deviations from it), then one pass writing xhat and Y (affine map,
activation, dropout). Batch norm works by column blocks, each owning its columns (the
column statistics, the running estimates and ``alive`` are then written by one thread
each, and every sum adds the rows in order whatever the thread count); layer norm by rows.

Backward, ONE compiled call of two passes, the mask hashed and ``A = gamma xhat + beta``
recomputed in each (reading dY and xhat twice costs less than writing dA and reading it
back): first the sums the gradient of the statistics needs, then dZ = dH and the column
sums. Batch norm's first pass is per column block (``sum_i dA``, ``sum_i dA xhat``: dbeta
and dgamma, whose gamma / N multiples are the means of the spec), layer norm's per row
(``sum_j dxhat``, ``sum_j dxhat xhat``); the second is by column blocks for both, rows in
order within a block as dense_backward's (which also adds layer norm's dgamma, dbeta and
dslope there). The per-row or per-column means live in a scratch buffer kept per shape.
"""
import functools
import math

import numpy as np
from numba import prange

from .. import spec
from .activations import PRELU, activate, check_code, derivative
from .dense import DZ_IS_DY, DZ_IS_Z, DZ_SEPARATE
from .jit import PARALLEL_MIN_WORK, column_width, inline, serial_and_parallel
from .rng import NO_DROPOUT, mask_args, mask_constants, mask_value
from .vecmath import cast_like, cast_to, clear

_scratch = {}  # (use, dtype, length) -> a (2, length) buffer reused by every call of that shape


def _scratch_of(use, dtype, length):
    key = (use, np.dtype(dtype), length)
    buffer = _scratch.get(key)
    if buffer is None:
        buffer = _scratch[key] = np.empty((2, length), dtype)
    return buffer


@inline
def _normalize_rows(act, per_row, xhat_is_z, Z, xhat, Y, b, gamma, beta, slope, mean, rstd, r0,
                    r1, c0, c1, alpha, dropout, key_lo, key_hi, threshold, scale, alive):
    """Rows r0..r1 - 1, columns c0..c1 - 1 of ``xhat = (Z + b - mu) * rstd`` and
    ``Y = act(gamma xhat + beta) * m / (1 - p)``; mu (float64, rounded to the dtype here)
    and rstd are ``mean[k]``, ``rstd[k]`` with k the row (``per_row``) or the column."""
    zero = cast_like(0.0, scale)
    m = Z.shape[1]
    bb, g, be, sl = b[c0:c1], gamma[c0:c1], beta[c0:c1], slope[c0:c1]
    for i in range(r0, r1):
        z = Z[i, c0:c1]
        x = z if xhat_is_z else xhat[i, c0:c1]
        y = Y[i, c0:c1]
        base = i * m + c0
        for j in range(z.size):
            k = i if per_row else c0 + j
            normalized = (z[j] + bb[j] - cast_to(mean[k], Z)) * rstd[k]
            x[j] = normalized
            fired = activate(act, alpha, sl[j], g[j] * normalized + be[j])
            if alive is not None:
                if fired > zero:
                    alive[c0 + j] = 1
            y[j] = fired * mask_value(dropout, base + j, key_lo, key_hi, threshold, scale)


@inline
def _inverse_std(var, eps, like):
    """1 / sqrt(var + eps) in float64, rounded to the dtype of array ``like``."""
    return cast_to(1.0 / math.sqrt(var + eps), like)


@functools.cache
def _forward_kernels(kind, act, xhat_is_z):
    """(serial, parallel) forward of one kind and activation, ``xhat_is_z``: xhat is Z."""
    per_row = kind == spec.NORM_LAYER

    def build(loop):
        parallel = loop is prange

        def forward(Z, b, gamma, beta, eps, training, momentum, running_mean, running_var, alpha,
                    slope, dropout, key_lo, key_hi, threshold, scale, xhat, rstd, Y, alive, stats):
            """spec.Backend.norm_forward after the GEMM; ``stats`` (2, M or N) float64
            scratch: the means, and batch norm's sums of squared deviations."""
            alpha = cast_to(alpha, Z)
            key_lo, key_hi, threshold, scale = mask_constants(key_lo, key_hi, threshold, scale, Z)
            n, m = Z.shape
            mean, squares = stats[0], stats[1]
            if per_row:
                for i in loop(n):
                    z = Z[i]
                    total = 0.0
                    for j in range(m):
                        total += np.float64(z[j] + b[j])
                    mu = total / m
                    total = 0.0
                    for j in range(m):
                        deviation = np.float64(z[j] + b[j]) - mu
                        total += deviation * deviation
                    mean[i] = mu
                    rstd[i] = _inverse_std(total / m, eps, Z)
                    _normalize_rows(act, True, xhat_is_z, Z, xhat, Y, b, gamma, beta, slope, mean,
                                    rstd, i, i + 1, 0, m, alpha, dropout, key_lo, key_hi, threshold,
                                    scale, alive)
                return
            width = max(m, 1)  # one block, serially
            if parallel:
                width = column_width(m)
            for block in loop(-(-m // width)):
                c0 = block * width
                c1 = min(m, c0 + width)
                mu, sq, bb = mean[c0:c1], squares[c0:c1], b[c0:c1]
                if training:
                    clear(mu)
                    for i in range(n):
                        z = Z[i, c0:c1]
                        for j in range(z.size):
                            mu[j] += np.float64(z[j] + bb[j])
                    for j in range(mu.size):
                        mu[j] /= n
                    clear(sq)
                    for i in range(n):
                        z = Z[i, c0:c1]
                        for j in range(z.size):
                            deviation = np.float64(z[j] + bb[j]) - mu[j]
                            sq[j] += deviation * deviation
                    for j in range(mu.size):
                        var = sq[j] / n
                        rstd[c0 + j] = _inverse_std(var, eps, Z)
                        running_mean[c0 + j] = cast_to(
                            (1.0 - momentum) * np.float64(running_mean[c0 + j]) + momentum * mu[j], Z)
                        running_var[c0 + j] = cast_to(
                            (1.0 - momentum) * np.float64(running_var[c0 + j])
                            + momentum * (var * n / (n - 1)), Z)
                else:
                    for j in range(mu.size):
                        mu[j] = np.float64(running_mean[c0 + j])
                        rstd[c0 + j] = _inverse_std(np.float64(running_var[c0 + j]), eps, Z)
                _normalize_rows(act, False, xhat_is_z, Z, xhat, Y, b, gamma, beta, slope, mean, rstd,
                                0, n, c0, c1, alpha, dropout, key_lo, key_hi, threshold, scale,
                                alive)
        return forward

    return serial_and_parallel(build)


def norm_forward(kind, Z, b, gamma, beta, eps, training, momentum, running_mean, running_var,
                 act, act_param, slope, dropout_p, key, xhat, rstd, Y, alive=None):
    n, m = Z.shape
    spec.check_norm(kind, training, n)
    act = check_code(act)
    if act == PRELU and slope is None:
        raise ValueError("slope: prelu needs its per-unit slopes")
    forward = _forward_kernels(kind, act, xhat is Z)[Z.size >= PARALLEL_MIN_WORK]
    dropout = NO_DROPOUT if dropout_p == 0 else mask_args(dropout_p, key, Z.dtype)
    if kind == spec.NORM_LAYER:
        running_mean = running_var = rstd  # stand-ins never read or written
        momentum = 0.0
    stats = _scratch_of("forward", np.float64, n if kind == spec.NORM_LAYER else m)
    forward(Z, b, gamma, beta, float(eps), bool(training), float(momentum), running_mean,
            running_var, act_param, b if slope is None else slope, *dropout, xhat, rstd, Y, alive,
            stats)


@inline
def _gradients(act, alpha, dy, x, g, be, sl, dropout, index, key_lo, key_hi, threshold, scale):
    """(u, A, dA) of one element: u = dY m / (1 - p), A = gamma xhat + beta, dA = u act'(A)."""
    upstream = dy * mask_value(dropout, index, key_lo, key_hi, threshold, scale)
    a = g * x + be
    return upstream, a, upstream * derivative(act, alpha, sl, a)


@inline
def _add_affine_sums(prelu, j, upstream, a, grad, x, sums, dot_sums, slope_sums):
    """sums[j] += dA, dot_sums[j] += dA xhat and, for prelu, slope_sums[j] += u min(A, 0)."""
    sums[j] += grad
    dot_sums[j] += grad * x
    if prelu:
        slope_sums[j] += upstream * (cast_like(0.0, a) if a >= 0 else a)  # min(A, 0), NaN kept


@functools.cache
def _backward_kernels(kind, act, dz_is, frozen):
    """(serial, parallel) backward of one kind, activation and aliasing of dZ (DZ_IS_Z:
    dZ is xhat); ``frozen``: dZ alone."""
    per_row = kind == spec.NORM_LAYER
    prelu = act == PRELU

    def build(loop):
        parallel = loop is prange

        def backward(dY, xhat, gamma, beta, rstd, alpha, slope, dropout, key_lo, key_hi, threshold,
                     scale, dZ, db, dgamma, dbeta, dslope, means):
            """spec.Backend.norm_backward; ``means`` (2, N or M) scratch of the dtype: the
            means of dxhat and of dxhat xhat over the normalized axis, per row or column.
            ``frozen``: db, dgamma, dbeta and dslope are unused stand-ins."""
            alpha = cast_to(alpha, dY)
            key_lo, key_hi, threshold, scale = mask_constants(key_lo, key_hi, threshold, scale, dY)
            zero = cast_like(0.0, scale)
            n, m = dY.shape
            mean_grad, mean_dot = means[0], means[1]
            if per_row:
                for i in loop(n):
                    dy, x = dY[i], xhat[i]
                    total = zero
                    dot = zero
                    for j in range(m):
                        grad = _gradients(act, alpha, dy[j], x[j], gamma[j], beta[j], slope[j],
                                          dropout, i * m + j, key_lo, key_hi, threshold, scale)[2]
                        scaled = grad * gamma[j]
                        total += scaled
                        dot += scaled * x[j]
                    mean_grad[i] = total / m
                    mean_dot[i] = dot / m
            width = max(m, 1)  # one block, serially
            if parallel:
                width = column_width(m)
            for block in loop(-(-m // width)):
                c0 = block * width
                c1 = min(m, c0 + width)
                g, be, sl = gamma[c0:c1], beta[c0:c1], slope[c0:c1]
                db_block, dgamma_block, dbeta_block = db[c0:c1], dgamma[c0:c1], dbeta[c0:c1]
                dslope_block = dslope[c0:c1]
                if not frozen:
                    clear(db_block)
                    if per_row:
                        clear(dgamma_block)
                        clear(dbeta_block)
                        if prelu:
                            clear(dslope_block)
                if not per_row:  # sum_i dA and sum_i dA xhat, then their means times gamma
                    sums, dot_sums = mean_grad[c0:c1], mean_dot[c0:c1]
                    clear(sums)
                    clear(dot_sums)
                    if prelu and not frozen:
                        clear(dslope_block)
                    for i in range(n):
                        dy, x = dY[i, c0:c1], xhat[i, c0:c1]
                        base = i * m + c0
                        for j in range(dy.size):
                            upstream, a, grad = _gradients(act, alpha, dy[j], x[j], g[j], be[j],
                                                           sl[j], dropout, base + j, key_lo, key_hi,
                                                           threshold, scale)
                            _add_affine_sums(prelu and not frozen, j, upstream, a, grad, x[j], sums,
                                             dot_sums, dslope_block)
                    for j in range(sums.size):
                        if not frozen:
                            dbeta_block[j] = sums[j]
                            dgamma_block[j] = dot_sums[j]
                        sums[j] = g[j] * sums[j] / n
                        dot_sums[j] = g[j] * dot_sums[j] / n
                for i in range(n):
                    dy, x = dY[i, c0:c1], xhat[i, c0:c1]
                    dz = x if dz_is == DZ_IS_Z else (dy if dz_is == DZ_IS_DY else dZ[i, c0:c1])
                    base = i * m + c0
                    for j in range(dy.size):
                        upstream, a, grad = _gradients(act, alpha, dy[j], x[j], g[j], be[j], sl[j],
                                                       dropout, base + j, key_lo, key_hi, threshold,
                                                       scale)
                        if per_row and not frozen:
                            _add_affine_sums(prelu, j, upstream, a, grad, x[j], dbeta_block,
                                             dgamma_block, dslope_block)
                        k = i if per_row else c0 + j
                        grad_h = rstd[k] * (grad * g[j] - mean_grad[k] - x[j] * mean_dot[k])
                        dz[j] = grad_h
                        if not frozen:
                            db_block[j] += grad_h
        return backward

    return serial_and_parallel(build)


# A frozen layer's stand-in for db, dgamma, dbeta and dslope: never read or written.
_NOTHING = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}


def norm_backward(kind, dY, xhat, gamma, beta, rstd, act, act_param, slope, dropout_p, key,
                  dZ, db, dgamma, dbeta, dslope):
    frozen = spec.frozen_norm_backward(db, dgamma, dbeta, dslope)
    spec.check_norm(kind, False, dY.shape[0])
    act = check_code(act)
    if act == PRELU and slope is None:
        raise ValueError("slope: prelu needs its per-unit slopes")
    dz_is = DZ_IS_Z if dZ is xhat else (DZ_IS_DY if dZ is dY else DZ_SEPARATE)
    backward = _backward_kernels(kind, act, dz_is, frozen)[dY.size >= PARALLEL_MIN_WORK]
    dropout = NO_DROPOUT if dropout_p == 0 else mask_args(dropout_p, key, dY.dtype)
    if frozen:
        db = dgamma = dbeta = dslope = _NOTHING[dY.dtype]
    elif dslope is None:
        dslope = np.empty_like(db) if act == PRELU else db  # prelu's kernel always writes it
    n, m = dY.shape
    means = _scratch_of("backward", dY.dtype, n if kind == spec.NORM_LAYER else m)
    backward(dY, xhat, gamma, beta, rstd, act_param, gamma if slope is None else slope, *dropout, dZ,
             db, dgamma, dbeta, dslope, means)
