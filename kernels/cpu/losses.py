"""Losses on logits with their gradients, one compiled pass per row (see kernels.spec).

Each kernel computes the per-sample loss and the gradient of the reduced loss together,
rows (or element blocks) in parallel, and returns the sum of the per-sample losses,
each rounded to the data's dtype and added in float64 as the reference does. The sum
is a numba ``prange`` reduction: numba keeps one float64 partial per thread, a
allocation of a few bytes per call, in exchange for no scratch buffer to manage.
``losses`` or ``grad`` given as None become a 0-size stand-in and a False flag, so
each kernel is compiled once per dtype rather than once per combination of outputs.
"""
import functools
import math

import numpy as np
from numba import prange

from .. import spec
from .activations import sigmoid
from .jit import inline, kernel, launch, row_loop
from .vecmath import cast_like, fast_exp, maximum

ELEMENT_BLOCK = 4096  # elements per parallel work item of the elementwise losses
SUM_CHUNK = 1024  # elements summed in the dtype before adding to a float64 total

_BCE, _MSE, _HUBER = range(3)


# ----------------------------------------------------------------------------- helpers
def _output(array, dtype, ndim):
    """(array for the kernel, whether it is wanted): a cached 0-size stand-in for None."""
    if array is not None:
        return array, True
    return _stand_in(np.dtype(dtype), ndim), False


@functools.cache
def _stand_in(dtype, ndim):
    return np.empty((0,) * ndim, dtype=dtype)


def _mean_scale(reduction, count):
    """The factor of the gradient: 1 / count for MEAN, 0 for a mean over nothing."""
    if reduction != spec.MEAN:
        return 1.0
    return 1.0 / count if count > 0 else 0.0


def _reduced(total, reduction, count):
    """The returned loss: a mean over nothing is NaN, as in torch."""
    if reduction != spec.MEAN:
        return total
    return total / count if count > 0 else math.nan


@row_loop
def _exp_segment(x, m, out, store):
    """(sum exp(x - m), sum (x - m)) over a 1-D segment, in the dtype; ``out = exp(x - m)``."""
    s = cast_like(0.0, m)
    sum_d = cast_like(0.0, m)
    for j in range(x.size):
        d = x[j] - m
        e = fast_exp(d)
        if store:
            out[j] = e
        s += e
        sum_d += d
    return s, sum_d


@row_loop
def _exp_row(x, i, out, store):
    """(m, s, sum_d) of row i: ``m = max_k x[i, k]``, ``d_k = x[i, k] - m``,
    ``s = sum_k exp(d_k)`` and ``sum_d = sum_k d_k`` (both float64), storing ``exp(d_k)``
    in ``out[i, k]`` when ``store``.

    Sums run in the dtype over chunks of SUM_CHUNK (vectorised) and the chunks add in
    float64: float32 accumulation over a row of 32000 would lose digits, and float64
    accumulation halves the vector width of the exp loop (measured 2x slower). The chunk
    loop works on 1-D row views: written with 2-D indices, LLVM vectorised it 2.4x worse.
    NaN anywhere in the row makes m NaN and so every output of the row NaN, as in NumPy.
    """
    row = x[i]
    m = row[0]
    for j in range(1, row.size):
        m = maximum(m, row[j])
    out_row = out[i] if store else row  # row is never written when not storing
    s = 0.0
    sum_d = 0.0
    for start in range(0, row.size, SUM_CHUNK):
        chunk_s, chunk_d = _exp_segment(row[start:start + SUM_CHUNK], m,
                                        out_row[start:start + SUM_CHUNK], store)
        s += chunk_s
        sum_d += chunk_d
    return m, s, sum_d


@inline
def _row_loss(value, like, losses, want_losses, i):
    """Row i's loss rounded to the dtype of ``like`` (the reference sums those rounded
    values), stored in ``losses[i]`` when wanted."""
    loss = cast_like(value, like)
    if want_losses:
        losses[i] = loss
    return loss


# ----------------------------------------------------------------------------- softmax
@kernel
def _softmax_rows(X, out):
    """``out[i] = exp(X[i] - max X[i]) / sum_k exp(X[i, k] - max X[i])``, rows in parallel."""
    for i in prange(X.shape[0]):
        m, s, _ = _exp_row(X, i, out, True)
        s = cast_like(s, m)  # the reference divides by the sum in the dtype
        for j in range(X.shape[1]):
            out[i, j] = out[i, j] / s


def softmax_rows(X, out):
    """Row-wise softmax of a 2-D ``X`` into ``out`` (apply_output's OUTPUT_SOFTMAX)."""
    launch(_softmax_rows, X.size, X, out)


# ------------------------------------------------------------------ cross-entropy rows
@kernel
def _cross_entropy_classes(logits, targets, ignore_index, on, off, tsum, mean,
                           losses, want_losses, grad, want_grad):
    """Softmax cross-entropy with class targets (spec.Backend.softmax_cross_entropy).

    With ``on = (1 - e) + e / K`` the smoothed weight of the target class, ``off = e / K``
    that of the others and ``m, s, d`` of :func:`_exp_row`:
    ``loss_i = log s * tsum - off * sum_k d_k - (on - off) * d_y`` and
    ``grad[i, k] = (exp(d_k) / s * tsum - t_k) * scale``, the exponentials stored by
    the pass that sums them and scaled in a second pass over the row (in cache).
    Rows whose target is ``ignore_index`` (or out of range: counted in ``bad``) give 0;
    ``scale`` is 1, or for a mean 1 / kept rows (0 when none is kept).
    Returns (sum of losses, kept rows, bad rows).
    """
    n, k = logits.shape
    kept = 0
    bad = 0
    for i in range(n):
        y = targets[i]
        if y != ignore_index:
            if 0 <= y < k:
                kept += 1
            else:
                bad += 1
    scale = cast_like(1.0, on)
    if mean:
        scale = cast_like(1.0 / kept, on) if kept > 0 else cast_like(0.0, on)
    total = 0.0
    for i in prange(n):
        y = targets[i]
        if y == ignore_index or y < 0 or y >= k:
            if want_losses:
                losses[i] = 0
            if want_grad:
                grad[i, :] = 0
        else:
            m, s, sum_d = _exp_row(logits, i, grad, want_grad)
            total += _row_loss(math.log(s) * tsum - off * sum_d - (on - off) * (logits[i, y] - m),
                               on, losses, want_losses, i)
            if want_grad:
                a = cast_like(tsum / s, on)
                g = grad[i]
                e_y = g[y]
                for j in range(k):
                    g[j] = (g[j] * a - off) * scale
                g[y] = (e_y * a - on) * scale
    return total, kept, bad


@kernel
def _cross_entropy_dense(logits, targets, keep, off, scale, losses, want_losses, grad, want_grad):
    """Softmax cross-entropy with distribution targets (spec.Backend.softmax_cross_entropy).

    ``t = keep * targets[i] + off`` (keep = 1 - e, off = e / K) and, with ``m, s, d`` of
    :func:`_exp_row`: ``loss_i = sum_k t_k * log s - sum_k t_k d_k``,
    ``grad[i, k] = (exp(d_k) / s * sum_k t_k - t_k) * scale``. Returns the sum of losses.
    """
    n, k = logits.shape
    total = 0.0
    for i in prange(n):
        m, s, _ = _exp_row(logits, i, grad, want_grad)
        x, target = logits[i], targets[i]
        tsum = 0.0
        sum_td = 0.0
        for j in range(k):
            t = keep * target[j] + off
            tsum += t
            sum_td += t * (x[j] - m)
        total += _row_loss(math.log(s) * tsum - sum_td, off, losses, want_losses, i)
        if want_grad:
            a = cast_like(tsum / s, off)
            g = grad[i]
            for j in range(k):
                g[j] = (g[j] * a - (keep * target[j] + off)) * scale
    return total


def softmax_cross_entropy(logits, targets, label_smoothing, ignore_index, reduction, losses, grad):
    n, k = logits.shape
    dtype = logits.dtype.type
    losses, want_losses = _output(losses, logits.dtype, 1)
    grad, want_grad = _output(grad, logits.dtype, 2)
    off = dtype(label_smoothing / k)
    if targets.ndim == 1:
        # The reference's t = (1 - e) * onehot + e / K, rounded as it rounds it.
        on = dtype(1.0 - label_smoothing) + off
        tsum = float(on) + (k - 1) * float(off)
        total, kept, bad = launch(
            _cross_entropy_classes, logits.size, logits, targets, np.int64(ignore_index), on, off,
            tsum, reduction == spec.MEAN, losses, want_losses, grad, want_grad)
        if bad:
            raise IndexError(f"{bad} class targets outside [0, {k}) that are not ignore_index")
        return _reduced(total, reduction, kept)
    total = launch(_cross_entropy_dense, logits.size, logits, targets,
                   dtype(1.0 - label_smoothing), off, dtype(_mean_scale(reduction, n)),
                   losses, want_losses, grad, want_grad)
    return _reduced(total, reduction, n)


# ------------------------------------------------------------------ elementwise losses
@inline
def _elementwise(kind, x, t, delta):
    """(loss, d loss / d x) of one element, in the dtype of ``x`` (kernels.spec formulas)."""
    zero = cast_like(0.0, x)
    if kind == _BCE:
        loss = (x if x > zero else zero) - x * t + math.log1p(fast_exp(-abs(x)))
        return loss, sigmoid(x) - t
    d = x - t
    if kind == _MSE:
        return d * d, cast_like(2.0, x) * d
    half = cast_like(0.5, x)
    a = abs(d)
    loss = half * d * d if a < delta else delta * (a - half * delta)
    # np.clip's NaN passes through: both comparisons are false for it.
    return loss, delta if d > delta else (-delta if d < -delta else d)


@functools.cache
def _elementwise_kernel(kind):
    """The kernel of one elementwise loss, compiled on first use."""

    @kernel
    def elementwise_loss(x, t, delta, scale, losses, want_losses, grad, want_grad):
        """``losses = l(x, t)``, ``grad = dl/dx * scale`` over flat arrays, in blocks of
        ELEMENT_BLOCK elements in parallel; returns the sum of the losses."""
        n = x.size
        total = 0.0
        for block in prange(-(-n // ELEMENT_BLOCK)):
            # 1-D views of the block: the loop vectorises on them (see kernels.cpu.dense).
            start, stop = block * ELEMENT_BLOCK, min(n, (block + 1) * ELEMENT_BLOCK)
            # An output given as None is a 0-size stand-in, its slice empty: no overlap
            # with the inputs for LLVM's run-time check to find.
            xs, ts, ls, gs = x[start:stop], t[start:stop], losses[start:stop], grad[start:stop]
            partial = 0.0
            for i in range(xs.size):
                loss, g = _elementwise(kind, xs[i], ts[i], delta)
                if want_losses:
                    ls[i] = loss
                if want_grad:
                    gs[i] = g * scale
                partial += loss
            total += partial
        return total

    return elementwise_loss


def _flat(array):
    """A 1-D view of ``array``, or a contiguous copy when no view exists."""
    return array.reshape(-1)


def _elementwise_loss(kind, pred, targets, delta, reduction, losses, grad):
    dtype = pred.dtype.type
    count = pred.size
    flat_losses, want_losses = _output(None if losses is None else _flat(losses), pred.dtype, 1)
    flat_grad, want_grad = _output(None if grad is None else _flat(grad), pred.dtype, 1)
    total = launch(_elementwise_kernel(kind), count, _flat(pred), _flat(targets), dtype(delta),
                   dtype(_mean_scale(reduction, count)), flat_losses, want_losses,
                   flat_grad, want_grad)
    # A non-contiguous output was computed into a copy: write it back.
    for out, flat in ((losses, flat_losses), (grad, flat_grad)):
        if out is not None and not np.may_share_memory(out, flat):
            out[...] = flat.reshape(out.shape)
    return _reduced(total, reduction, count)


def binary_cross_entropy(logits, targets, reduction, losses, grad):
    return _elementwise_loss(_BCE, logits, targets, 0.0, reduction, losses, grad)


def mse(pred, targets, reduction, losses, grad):
    return _elementwise_loss(_MSE, pred, targets, 0.0, reduction, losses, grad)


def huber(pred, targets, delta, reduction, losses, grad):
    return _elementwise_loss(_HUBER, pred, targets, delta, reduction, losses, grad)
