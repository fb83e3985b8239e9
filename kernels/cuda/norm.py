"""Batch norm and layer norm on CUDA (see kernels.spec: Backend.norm_forward, norm_backward):
the kernels of ``norm.cu``, launched with the conventions of :mod:`kernels.cuda.dense`
(whose argument checks, masks, launch shapes and chunked column sums they share).

Forward: batch norm in training is three launches, the chunks' moments of each column
(``column_moments``, rows cut as dense_backward cuts them: :func:`dense._row_chunks`), the
column statistics and running estimates (``finish_moments``; alone in evaluation), then
the elementwise ``normalize_columns``; layer norm is one launch of a block per row
(``normalize_rows``). Backward: batch norm sums dA and dA xhat per column
(``norm_columns``), then computes dZ and db (``norm_columns`` again); layer norm sums each
row (``row_sums``), then computes dZ, db, dgamma, dbeta and dslope in one ``norm_columns``;
several row chunks add a ``finish_column_sums`` of dense.cu per output. Scratch (the
moments, means, row sums, partial sums) is allocated once per shape
(:func:`kernels.cuda.losses.scratch`): a step allocates nothing in the steady state, as a
CUDA graph capture wants.

Layouts as in dense.py: inputs that are not C-contiguous are copied, outputs computed into
a temporary and copied back; every input is read (copied) before any output is written,
so the aliasing the spec allows (xhat or Y over Z, dZ over xhat or dY) holds.
"""
import cupy
import numpy as np

from .. import spec
from . import dense
from .compiler import Source, instances
from .losses import scratch

_SOURCE = Source("norm.cu", [name for kernel in ("column_moments", "finish_moments",
                                                 "normalize_columns", "normalize_rows", "row_sums",
                                                 "norm_columns")
                             for name in instances(kernel)])

# The sums norm_columns can take, in the order of its arguments.
SUMS = ("dbeta", "dgamma", "dslope", "db")


def _check_outputs(dtype, shape, **arrays):
    """TypeError / ValueError naming an array (None skipped) of another dtype or shape."""
    for name, array in arrays.items():
        if array is None:
            continue
        dense._same_dtype(array, dtype, name)
        if array.shape != shape:
            raise ValueError(f"{name}: shape {array.shape}, expected {shape}")


def _checked(kind, training, act, slope, array, name):
    """(activation code, dtype) of an op on ``array`` (n, m) named ``name``, after the
    checks both ops make (spec.check_norm, the code, prelu's slopes, the dtype)."""
    spec.check_norm(kind, training, array.shape[0])
    act = dense._activation(act)
    if act == spec.PRELU and slope is None:
        raise ValueError("slope: prelu needs its per-unit slopes")
    return act, dense._float_dtype(array, name)


def _vectors(dtype, *arrays):
    """C-contiguous copies (where needed) of the (m,) parameter arrays, None kept."""
    return [None if a is None else cupy.ascontiguousarray(a, dtype) for a in arrays]


def norm_forward(kind, Z, b, gamma, beta, eps, training, momentum, running_mean, running_var,
                 act, act_param, slope, dropout_p, key, xhat, rstd, Y, alive=None):
    n, m = Z.shape
    act, dtype = _checked(kind, training, act, slope, Z, "Z")
    batch = kind == spec.NORM_BATCH
    _check_outputs(dtype, (n, m), xhat=xhat, Y=Y)
    _check_outputs(dtype, (m if batch else n,), rstd=rstd)
    if batch:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean, running_var: batch norm needs its running estimates")
        _check_outputs(dtype, (m,), running_mean=running_mean, running_var=running_var)
    alive_c = dense._alive_flags(alive, m)
    mask = dense.mask_args(dropout_p, key, dtype)
    Z_c = cupy.ascontiguousarray(Z, dtype)
    b, gamma, beta, slope = _vectors(dtype, b, gamma, beta, slope)
    xhat_c = Z_c if xhat is Z else dense._writable(xhat)
    Y_c = Z_c if Y is Z else (xhat_c if Y is xhat else dense._writable(Y))
    rstd_c = dense._writable(rstd)
    mean_c, var_c = _vectors(dtype, running_mean, running_var) if batch else (None, None)
    unread = b if slope is None else slope  # a stand-in for the slope, read by prelu only
    elementwise = (dense._alpha(act_param, dtype), *mask)
    if n and m and batch:
        mean = scratch("norm forward mean", (m,), dtype)
        chunk_rows, chunks = dense._row_chunks(n) if training else (0, 0)
        moments = None
        if training:
            moments = scratch("norm forward moments", (2 * chunks * m,), np.float64)
            _SOURCE.function("column_moments", dtype)(
                (dense._ceil_div(m, dense.COLUMN_TILE), chunks), (dense.COLUMN_TILE, dense.ROW_LANES),
                (Z_c, b, np.int64(n), np.int64(m), np.int64(chunk_rows), moments),
                shared_mem=dense.COLUMN_TILE * dense.ROW_LANES * 8)
        _SOURCE.function("finish_moments", dtype)(
            (dense._ceil_div(m, dense.BLOCK),), (dense.BLOCK,),
            (moments, np.int64(chunks), np.int64(n), np.int64(m), np.int64(chunk_rows),
             np.int32(bool(training)), np.float64(eps), np.float64(momentum), mean_c, var_c, mean,
             rstd_c))
        _SOURCE.function("normalize_columns", dtype)(
            dense._elementwise_grid(n * m), (dense.BLOCK,),
            (Z_c, b, gamma, beta, unread, mean, rstd_c, np.int64(n * m), np.int64(m), np.int32(act),
             *elementwise, xhat_c, Y_c, alive_c))
    elif n and m:
        threads = dense._row_threads(m)
        _SOURCE.function("normalize_rows", dtype)(
            (min(n, dense.MAX_ROW_BLOCKS),), (threads,),
            (Z_c, b, gamma, beta, unread, np.int64(n), np.int64(m), np.float64(eps), np.int32(act),
             *elementwise, xhat_c, rstd_c, Y_c, alive_c),
            shared_mem=threads * 8)
    for array, written in ((xhat, xhat_c), (Y, Y_c), (rstd, rstd_c), (running_mean, mean_c),
                           (running_var, var_c)):
        if array is not None and not (array is Y and Y is xhat):
            dense._write_back(array, written)
    if alive is not None:
        dense._write_back(alive, alive_c)


def _norm_columns(arrays, elementwise, dZ, targets, n, m, dtype):
    """Launch norm_columns on ``arrays`` (its arguments up to ``per_row``) and
    ``elementwise`` (from ``act`` to ``scale``) with dZ (or None) and its sums into
    ``targets`` (dbeta, dgamma, dslope, db: (m,) arrays or None), through partial sums and
    finish_column_sums where the rows take several chunks."""
    chunk_rows, chunks = dense._row_chunks(n)
    sinks = targets
    if chunks > 1:
        partials = scratch("norm partial sums", (len(SUMS), chunks * m), dtype)
        sinks = [None if t is None else partials[q] for q, t in enumerate(targets)]
    _SOURCE.function("norm_columns", dtype)(
        (dense._ceil_div(m, dense.COLUMN_TILE), chunks), (dense.COLUMN_TILE, dense.ROW_LANES),
        (*arrays, np.int64(n), np.int64(m), np.int64(chunk_rows), *elementwise, dZ, *sinks),
        shared_mem=len(SUMS) * dense.COLUMN_TILE * dense.ROW_LANES * np.dtype(dtype).itemsize)
    if chunks > 1:
        finish = dense._SOURCE.function("finish_column_sums", dtype)
        for sink, target in zip(sinks, targets):
            if target is not None:
                finish((dense._ceil_div(m, dense.BLOCK),), (dense.BLOCK,),
                       (sink, np.int64(chunks), np.int64(m), np.int32(0), target, None))


def norm_backward(kind, dY, xhat, gamma, beta, rstd, act, act_param, slope, dropout_p, key,
                  dZ, db, dgamma, dbeta, dslope):
    frozen = spec.frozen_norm_backward(db, dgamma, dbeta, dslope)
    n, m = dY.shape
    act, dtype = _checked(kind, False, act, slope, dZ, "dZ")
    batch = kind == spec.NORM_BATCH
    _check_outputs(dtype, (n, m), dZ=dZ)
    _check_outputs(dtype, (m,), db=db, dgamma=dgamma, dbeta=dbeta, dslope=dslope)
    if act != spec.PRELU:
        dslope = None  # no slopes to differentiate
    mask = dense.mask_args(dropout_p, key, dtype)
    # Read before any write: dZ may be dY or xhat (then the same array, contiguous or a copy).
    dY_c = cupy.ascontiguousarray(dY, dtype)
    xhat_c = cupy.ascontiguousarray(xhat, dtype)
    dZ_c = xhat_c if dZ is xhat else (dY_c if dZ is dY else dense._writable(dZ))
    gamma, beta, rstd_c, slope = _vectors(dtype, gamma, beta, rstd, slope)
    outputs = dict(zip(SUMS, (dbeta, dgamma, dslope, db)))
    written = {name: None if a is None else dense._writable(a) for name, a in outputs.items()}
    unread = gamma if slope is None else slope  # a stand-in for the slope, read by prelu only
    elementwise = (np.int32(act), dense._alpha(act_param, dtype), *mask)
    if n and m:
        def arrays(grad_sums, dot_sums, per_row):
            return dY_c, xhat_c, gamma, beta, unread, rstd_c, grad_sums, dot_sums, np.int32(per_row)

        if batch:  # the column sums of dA and dA xhat first: dbeta and dgamma, or scratch
            column = scratch("norm column sums", (2, m), dtype) if frozen else None
            grad_sums = written["dbeta"] if not frozen else column[0]
            dot_sums = written["dgamma"] if not frozen else column[1]
            _norm_columns(arrays(None, None, 0), elementwise, None,
                          [grad_sums, dot_sums, written["dslope"], None], n, m, dtype)
            _norm_columns(arrays(grad_sums, dot_sums, 0), elementwise, dZ_c,
                          [None, None, None, written["db"]], n, m, dtype)
        else:
            rows = scratch("norm row sums", (2, n), dtype)
            threads = dense._row_threads(m)
            _SOURCE.function("row_sums", dtype)(
                (min(n, dense.MAX_ROW_BLOCKS),), (threads,),
                (dY_c, xhat_c, gamma, beta, unread, np.int64(n), np.int64(m), *elementwise, rows),
                shared_mem=threads * np.dtype(dtype).itemsize)
            _norm_columns(arrays(rows[0], rows[1], 1), elementwise, dZ_c,
                          [written[name] for name in SUMS], n, m, dtype)
    else:  # sums over no rows
        for array in written.values():
            if array is not None:
                array.fill(0)
    dense._write_back(dZ, dZ_c)
    for name, array in outputs.items():
        if array is not None:
            dense._write_back(array, written[name])
