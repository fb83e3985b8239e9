"""Dense layer forward/backward, dropout masks and output functions (see kernels.spec).

Each op is a BLAS GEMM into the preallocated output (``np.matmul(..., out=)``, NumPy's
OpenBLAS) plus ONE compiled pass for everything elementwise around it: bias, activation
and dropout in the forward; dropout, activation derivative, bias and prelu gradients in
the backward. The dropout mask is never stored: both passes hash element indices again.
"""
import functools

import numpy as np
from numba import get_num_threads, prange

from .. import spec
from .activations import IDENTITY, PRELU, activate, check_code, derivative, sigmoid
from .jit import inline, kernel, launch
from .losses import softmax_rows
from .rng import keep_bit, mask_args
from .vecmath import cast_like


def gemm(a, b, out):
    """``out = a @ b`` by BLAS straight into ``out``.

    ``np.matmul`` hands transposed and row-strided views (a column slice of a larger
    array) to BLAS as they are, where ``np.dot`` would copy the latter, and takes any
    ``out``; both are equally fast here.
    """
    np.matmul(a, b, out=out)


def _slope_or(slope, like):
    # Kernels take a real array in every argument slot, so None becomes a stand-in that
    # is never read (only prelu reads the slope).
    return like if slope is None else slope


@inline
def _mask(dropout, index, key_lo, key_hi, threshold, scale):
    """m / (1 - p) of element ``index``; exactly 1 (and no hashing) without dropout."""
    if not dropout:
        return cast_like(1.0, scale)
    return scale if keep_bit(index, key_lo, key_hi, threshold) else cast_like(0.0, scale)


# The loops below work on 1-D views of rows (or of row pieces): LLVM vectorises those
# fully, where a loop indexing the 2-D array from an offset it vectorised 2-3x worse.
# An output that is also an input is passed as the SAME view in both places: given two
# views of one buffer, LLVM's run-time overlap check sends the loop to its scalar
# fallback (measured 2.2-2.4x slower).
@inline
def _forward_row(act, dropout, z, y, write_z, b, alpha, slope, base, key_lo, key_hi, threshold,
                 scale):
    for j in range(z.size):
        pre = z[j] + b[j]
        if write_z:
            z[j] = pre
        # act(z) * 0 rather than 0 for a dropped element: NaN and inf stay visible, as
        # in the reference's multiplication by the mask.
        y[j] = (activate(act, alpha, slope[j], pre)
                * _mask(dropout, base + j, key_lo, key_hi, threshold, scale))


def _has_dropout(threshold, scale):
    # A p > 0 so small that no element drops still scales by 1 / (1 - p).
    return threshold > 0 or scale != 1


@functools.cache
def _forward_kernel(act, in_place):
    """The forward pass of one activation (``in_place``: Y is Z), compiled on first use."""

    @kernel
    def forward_epilogue(Z, Y, b, alpha, slope, dropout, key_lo, key_hi, threshold, scale):
        """``Z += b``; ``Y = act(Z) * m / (1 - p)`` (spec.Backend.dense_forward), rows in
        parallel; LLVM unswitches the row loop on ``dropout``, so p = 0 hashes nothing."""
        m = Z.shape[1]
        for i in prange(Z.shape[0]):
            z = Z[i]
            _forward_row(act, dropout, z, z if in_place else Y[i], not in_place, b, alpha, slope,
                         i * m, key_lo, key_hi, threshold, scale)

    return forward_epilogue


def dense_forward(X, W, b, act, act_param, slope, dropout_p, key, Z, Y):
    act = check_code(act)
    gemm(X, W, Z)
    key_lo, key_hi, threshold, scale = mask_args(dropout_p, key, Z.dtype)
    launch(_forward_kernel(act, Y is Z), Z.size, Z, Y, b, Z.dtype.type(act_param),
           _slope_or(slope, b), _has_dropout(threshold, scale), key_lo, key_hi, threshold, scale)


@inline
def _backward_piece(act, dropout, dy, z, dz, write_dz, db, dslope, alpha, slope, base,
                    key_lo, key_hi, threshold, scale):
    zero = cast_like(0.0, scale)
    for j in range(dy.size):
        upstream = dy[j] * _mask(dropout, base + j, key_lo, key_hi, threshold, scale)
        pre = z[j]
        if act == PRELU:
            dslope[j] += upstream * (zero if pre >= zero else pre)  # min(Z, 0), NaN kept
        grad = upstream * derivative(act, alpha, slope[j], pre)
        if write_dz:
            dz[j] = grad
        db[j] += grad


def column_blocks(m):
    """(width, count) of the column blocks a column reduction is parallelised over.

    Whole 64-byte lines per block, and about four blocks per thread for balance; each
    block then owns its output columns, so no thread-private partial sums are needed.
    (Computed here rather than in the kernel: numba's get_num_threads there would keep
    the kernel out of the disk cache.)
    """
    per_block = -(-m // (4 * get_num_threads()))
    width = max(64, -(-per_block // 16) * 16)
    return width, -(-m // width)


# What dZ is: its own array, Z (overwritten by its gradient), or dY.
DZ_SEPARATE, DZ_IS_Z, DZ_IS_DY = range(3)


@functools.cache
def _backward_kernel(act, dz_is):
    """The backward pass of one activation and aliasing of dZ, compiled on first use."""

    @kernel
    def backward_epilogue(dY, Z, dZ, db, dslope, alpha, slope, write_dz, width, count,
                          dropout, key_lo, key_hi, threshold, scale):
        """``dZ = dY * m / (1 - p) * act'(Z)``, ``db = sum_i dZ[i]`` and the prelu ``dslope``
        (spec.Backend.dense_backward), column blocks in parallel, rows in order within a
        block (so the column sums add in the reference's order)."""
        n, m = dY.shape
        for block in prange(count):
            c0 = block * width
            c1 = min(m, c0 + width)
            db_block = db[c0:c1]
            dslope_block = dslope[c0:c1]
            slope_block = slope[c0:c1]
            db_block[:] = 0
            if act == PRELU:
                dslope_block[:] = 0
            for i in range(n):
                dy = dY[i, c0:c1]
                z = Z[i, c0:c1]
                dz = z if dz_is == DZ_IS_Z else (dy if dz_is == DZ_IS_DY else dZ[i, c0:c1])
                _backward_piece(act, dropout, dy, z, dz, write_dz, db_block, dslope_block,
                                alpha, slope_block, i * m + c0, key_lo, key_hi, threshold, scale)

    return backward_epilogue


def dense_backward(dY, X, W, Z, act, act_param, slope, dropout_p, key, dZ, dW, db, dslope, dX):
    act = check_code(act)
    if act == PRELU and dslope is None:
        dslope = np.empty_like(db)  # the kernel always writes it for prelu
    dz_is = DZ_IS_Z if dZ is Z else (DZ_IS_DY if dZ is dY else DZ_SEPARATE)
    # dZ = dY * 1 * 1 needs no writing: only its column sums are wanted.
    write_dz = not (dz_is == DZ_IS_DY and act == IDENTITY and dropout_p == 0)
    key_lo, key_hi, threshold, scale = mask_args(dropout_p, key, Z.dtype)
    launch(_backward_kernel(act, dz_is), dY.size, dY, Z, dZ, db, _slope_or(dslope, db),
           Z.dtype.type(act_param), _slope_or(slope, db), write_dz, *column_blocks(db.shape[0]),
           _has_dropout(threshold, scale), key_lo, key_hi, threshold, scale)
    gemm(X.T, dZ, dW)
    if dX is not None:
        gemm(dZ, W.T, dX)


@kernel
def _dropout_mask(out, key_lo, key_hi, threshold, scale):
    """``out[i, j] = keep(i * m + j) / (1 - p)``, rows in parallel."""
    zero = cast_like(0.0, scale)
    m = out.shape[1]
    for i in prange(out.shape[0]):
        row = out[i]
        for j in range(m):
            row[j] = scale if keep_bit(i * m + j, key_lo, key_hi, threshold) else zero


def _as_rows(array):
    """A 2-D view of ``array`` in which element (i, j) has C-order flat index i * m + j."""
    if array.ndim == 2:
        return array
    if array.ndim < 2:
        return array.reshape(1, -1)
    return array.reshape(-1, array.shape[-1])


def dropout_mask(dropout_p, key, out):
    rows = _as_rows(out)
    launch(_dropout_mask, rows.size, rows, *mask_args(dropout_p, key, out.dtype))
    if not np.may_share_memory(rows, out):  # reshape had to copy a non-contiguous out
        out[...] = rows.reshape(out.shape)


@kernel
def _sigmoid_rows(X, out):
    """``out = sigmoid(X)`` elementwise, rows in parallel."""
    for i in prange(X.shape[0]):
        x, y = X[i], out[i]
        for j in range(x.size):
            y[j] = sigmoid(x[j])


def apply_output(kind, X, out):
    if kind == spec.OUTPUT_NONE:
        if out is not X:
            np.copyto(out, X)
    elif kind == spec.OUTPUT_SIGMOID:
        launch(_sigmoid_rows, X.size, _as_rows(X), _as_rows(out))
    elif kind == spec.OUTPUT_SOFTMAX:
        softmax_rows(X, out)
    else:
        raise ValueError(f"unknown output code {kind}")
