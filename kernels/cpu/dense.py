"""Dense layer forward/backward, dropout masks and output functions (see kernels.spec).

Each dense op is ONE compiled call: the GEMMs, by BLAS called from the kernel
(:mod:`kernels.cpu.blas`), plus one pass for everything elementwise around them: bias,
activation and dropout in the forward; dropout, activation derivative, bias and prelu
gradients in the backward. Where the kernel cannot run the GEMMs (no BLAS bound, or an
operand not C-contiguous) the wrapper runs them by :func:`kernels.cpu.blas.matmul` and
the same kernel does only the elementwise pass. The dropout mask is never stored: both
passes hash element indices again.

Every kernel comes serial and parallel (:func:`kernels.cpu.jit.serial_and_parallel`);
wrappers pass Python scalars (the cheapest to dispatch), which the kernels round to
the dtype, and find the kernels of an activation code in a dict filled on first use.
"""
import functools

import numpy as np
from numba import prange

from .. import spec
from . import blas
from .activations import IDENTITY, PRELU, activate, check_code, derivative, sigmoid
from .blas import gemm_ready, matmul, ready
from .jit import PARALLEL_MIN_WORK, column_width, serial_and_parallel
from .losses import softmax_rows
from .rng import NO_DROPOUT, keep_bit, mask_args, mask_constants, mask_value
from .vecmath import cast_like, cast_to, clear


def _in_kernel(X, W, outputs):
    """Whether the kernel may run the GEMMs of X and W itself (the common case, kept to
    one compiled call): BLAS bound, X and W C-contiguous (views take blas.matmul, which
    handles their strides, so no kernel is compiled again per layout) and, for an LP64
    BLAS, sizes that fit its ints (``outputs``: the GEMMs' outputs, None skipped)."""
    return (blas.ENABLED and X.flags.c_contiguous and W.flags.c_contiguous
            and (blas.WIDE_INTS or blas.fits(X, W, *outputs)))


# The epilogue loops below work on 1-D views of rows (or of row pieces): LLVM vectorises
# those fully, where a loop indexing the 2-D array from an offset it vectorised 2-3x
# worse. An output that is also an input is passed as the SAME view in both places:
# given two views of one buffer, LLVM's run-time overlap check sends the loop to its
# scalar fallback (measured 2.2-2.4x slower).
@functools.cache
def _forward_kernels(act, in_place):
    """(serial, parallel) forward of one activation, ``in_place`` meaning Y is Z."""

    def build(loop):
        def forward(X, W, Z, Y, b, alpha, slope, in_kernel, dropout, key_lo, key_hi, threshold,
                    scale, alive):
            """``Z = X @ W`` by BLAS when ``in_kernel`` (else the caller computed Z), then
            ``Z += b``; ``Y = act(Z) * m / (1 - p)`` (spec.Backend.dense_forward), by rows.
            LLVM unswitches the row loop on ``dropout``, so p = 0 hashes nothing. Returns
            False, having done nothing, when BLAS cannot take the operands as they are.

            ``alive`` is None (numba then compiles without its branch: the kernel of a step
            without diagnostics is unchanged) or the uint8 flags of spec's ``alive``, set to
            1 where ``act(Z) > 0``. Only 1 is ever stored, never a value read back: rows on
            other threads may set the same flag, and each leaves 1 whatever the order."""
            if in_kernel:
                if not ready(X, W, Z):
                    return False
                gemm_ready(X, W, Z)
            alpha = cast_to(alpha, Z)
            key_lo, key_hi, threshold, scale = mask_constants(key_lo, key_hi, threshold, scale, Z)
            zero = cast_like(0.0, scale)
            m = Z.shape[1]
            for i in loop(Z.shape[0]):
                z = Z[i]
                y = z if in_place else Y[i]
                for j in range(m):
                    pre = z[j] + b[j]
                    if not in_place:
                        z[j] = pre
                    fired = activate(act, alpha, slope[j], pre)
                    if alive is not None:
                        if fired > zero:
                            alive[j] = 1
                    # act(z) * 0 rather than 0 for a dropped element: NaN and inf stay
                    # visible, as in the reference's multiplication by the mask.
                    y[j] = fired * mask_value(dropout, i * m + j, key_lo, key_hi, threshold, scale)
            return True
        return forward

    return serial_and_parallel(build)


_forward = {}  # activation code -> (kernels for Y apart from Z, kernels for Y is Z)


def _forward_pairs(act):
    pairs = (_forward_kernels(check_code(act), False), _forward_kernels(check_code(act), True))
    _forward[act] = pairs
    return pairs


def dense_forward(X, W, b, act, act_param, slope, dropout_p, key, Z, Y, alive=None):
    forward = (_forward.get(act) or _forward_pairs(act))[Y is Z][Z.size >= PARALLEL_MIN_WORK]
    dropout = NO_DROPOUT if dropout_p == 0 else mask_args(dropout_p, key, Z.dtype)
    if slope is None:
        slope = b  # a stand-in that is never read: only prelu reads the slope
    if not (_in_kernel(X, W, (Z,))
            and forward(X, W, Z, Y, b, act_param, slope, True, *dropout, alive)):
        matmul(X, W, Z)
        forward(Z, Z, Z, Y, b, act_param, slope, False, *dropout, alive)  # X, W: unread stand-ins


# What dZ is: its own array, Z (overwritten by its gradient), or dY.
DZ_SEPARATE, DZ_IS_Z, DZ_IS_DY = range(3)


@functools.cache
def _backward_kernels(act, dz_is, frozen):
    """(serial, parallel) backward of one activation and aliasing of dZ; ``frozen``: a
    frozen layer's, which computes neither db, dslope nor dW."""

    def build(loop):
        parallel = loop is prange

        def backward(dY, X, W, Z, dZ, dW, db, dslope, dX, alpha, slope, in_kernel, want_dx,
                     dropout, key_lo, key_hi, threshold, scale):
            """``dZ = dY * m / (1 - p) * act'(Z)``, ``db = sum_i dZ[i]`` and the prelu
            ``dslope`` (spec.Backend.dense_backward), by column blocks, rows in order within
            a block (so the column sums add in the reference's order); then, when
            ``in_kernel``, ``dW = X.T @ dZ`` and (``want_dx``) ``dX = dZ @ W.T`` by BLAS.
            Returns whether it ran them: not without ``in_kernel``, nor when BLAS cannot
            take the operands as they are; the caller then runs them. ``frozen``: dZ alone,
            then dX; db, dslope and dW are unused stand-ins (and the slope, but for prelu)."""
            alpha = cast_to(alpha, Z)
            key_lo, key_hi, threshold, scale = mask_constants(key_lo, key_hi, threshold, scale, Z)
            zero = cast_like(0.0, scale)
            # dZ = dY * 1 * 1 needs no writing: only its column sums are wanted.
            write_dz = not (dz_is == DZ_IS_DY and act == IDENTITY and not dropout)
            n, m = dY.shape
            if parallel:
                width = column_width(m)
            else:
                width = max(m, 1)  # one block
            for block in loop(-(-m // width)):
                c0 = block * width
                c1 = min(m, c0 + width)
                db_block, dslope_block, slope_block = db[c0:c1], dslope[c0:c1], slope[c0:c1]
                if not frozen:
                    clear(db_block)
                    if act == PRELU:
                        clear(dslope_block)
                for i in range(n):
                    dy = dY[i, c0:c1]
                    z = Z[i, c0:c1]
                    dz = z if dz_is == DZ_IS_Z else (dy if dz_is == DZ_IS_DY else dZ[i, c0:c1])
                    base = i * m + c0
                    for j in range(dy.size):
                        upstream = dy[j] * mask_value(dropout, base + j, key_lo, key_hi, threshold,
                                                 scale)
                        pre = z[j]
                        if act == PRELU and not frozen:  # min(Z, 0), NaN kept
                            dslope_block[j] += upstream * (zero if pre >= zero else pre)
                        grad = upstream * derivative(act, alpha,
                                                     slope_block[j] if act == PRELU else zero, pre)
                        if write_dz:
                            dz[j] = grad
                        if not frozen:
                            db_block[j] += grad
            if not (in_kernel and (frozen or ready(X.T, dZ, dW))
                    and (not want_dx or ready(dZ, W.T, dX))):
                return False
            if not frozen:
                gemm_ready(X.T, dZ, dW)
            if want_dx:
                gemm_ready(dZ, W.T, dX)
            return True
        return backward

    return serial_and_parallel(build)


_backward = {}  # activation code -> (trained, frozen) kernels by DZ_SEPARATE, DZ_IS_Z, DZ_IS_DY
# A frozen layer's stand-in for db, dslope and (but for prelu) the slope: never read or written.
_NOTHING = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}


def _backward_kernels_of(act):
    kernels = tuple(tuple(_backward_kernels(check_code(act), dz_is, frozen) for dz_is in range(3))
                    for frozen in (False, True))
    _backward[act] = kernels
    return kernels


def dense_backward(dY, X, W, Z, act, act_param, slope, dropout_p, key, dZ, dW, db, dslope, dX):
    frozen = spec.frozen_backward(dW, db, dslope)
    backward = (_backward.get(act) or _backward_kernels_of(act))[frozen][
        DZ_IS_Z if dZ is Z else (DZ_IS_DY if dZ is dY else DZ_SEPARATE)][dY.size >= PARALLEL_MIN_WORK]
    dropout = NO_DROPOUT if dropout_p == 0 else mask_args(dropout_p, key, Z.dtype)
    if frozen:
        db = dslope = _NOTHING[Z.dtype]
    if slope is None:
        slope = db  # stand-ins that are never read or written (prelu has both)
    if dslope is None:
        dslope = np.empty_like(db) if act == PRELU else db  # prelu's kernel always writes it
    # dZ stands in for a dW or dX given as None: one compiled kernel either way, never written.
    if _in_kernel(X, W, (dZ, dW, dX)):
        done = backward(dY, X, W, Z, dZ, dZ if frozen else dW, db, dslope, dZ if dX is None else dX,
                        act_param, slope, True, dX is not None, *dropout)
    else:  # X, W, dW, dX: unread stand-ins
        done = backward(dY, dZ, dZ, Z, dZ, dZ, db, dslope, dZ, act_param, slope, False, False,
                        *dropout)
    if not done:
        if not frozen:
            matmul(X.T, dZ, dW)
        if dX is not None:
            matmul(dZ, W.T, dX)


def _build_dropout_mask(loop):
    def dropout_mask(out, dropout, key_lo, key_hi, threshold, scale):
        """``out[i, j] = keep(i * m + j) / (1 - p)``, by rows."""
        key_lo, key_hi, threshold, scale = mask_constants(key_lo, key_hi, threshold, scale, out)
        zero = cast_like(0.0, scale)
        m = out.shape[1]
        for i in loop(out.shape[0]):
            row = out[i]
            for j in range(m):
                row[j] = scale if keep_bit(i * m + j, key_lo, key_hi, threshold) else zero
    return dropout_mask


_DROPOUT_MASK = serial_and_parallel(_build_dropout_mask)


def _as_rows(array):
    """A 2-D view of ``array`` in which element (i, j) has C-order flat index i * m + j."""
    if array.ndim == 2:
        return array
    if array.ndim < 2:
        return array.reshape(1, -1)
    return array.reshape(-1, array.shape[-1])


def dropout_mask(dropout_p, key, out):
    rows = _as_rows(out)
    _DROPOUT_MASK[rows.size >= PARALLEL_MIN_WORK](rows, *mask_args(dropout_p, key, out.dtype))
    if not np.may_share_memory(rows, out):  # reshape had to copy a non-contiguous out
        out[...] = rows.reshape(out.shape)


def _build_sigmoid_rows(loop):
    def sigmoid_rows(X, out):
        """``out = sigmoid(X)`` elementwise, by rows."""
        for i in loop(X.shape[0]):
            x, y = X[i], out[i]
            for j in range(x.size):
                y[j] = sigmoid(x[j])
    return sigmoid_rows


_SIGMOID_ROWS = serial_and_parallel(_build_sigmoid_rows)


def apply_output(kind, X, out):
    if kind == spec.OUTPUT_NONE:
        if out is not X:
            np.copyto(out, X)
    elif kind == spec.OUTPUT_SIGMOID:
        _SIGMOID_ROWS[X.size >= PARALLEL_MIN_WORK](_as_rows(X), _as_rows(out))
    elif kind == spec.OUTPUT_SOFTMAX:
        softmax_rows(X, out)
    else:
        raise ValueError(f"unknown output code {kind}")
