"""Losses on logits with their gradients, one compiled pass per row (see kernels.spec).

Each kernel computes the per-sample loss and the gradient of the reduced loss together,
rows (or element blocks) in parallel, and returns the sum of the per-sample losses,
each rounded to the data's dtype and added in float64 as the reference does. The sum
is a numba ``prange`` reduction: numba keeps one float64 partial per thread, a
allocation of a few bytes per call, in exchange for no scratch buffer to manage.
``losses``, ``grad`` or ``weights`` given as None become a 0-size stand-in and a False
flag, so each kernel is compiled once per dtype rather than once per combination of
outputs. Without weights a row's weight is 1: the products by it are exact, so the
results are bit for bit the unweighted ones.
Every kernel comes serial and parallel (:func:`kernels.cpu.jit.serial_and_parallel`),
and takes its scalars as Python numbers, rounding them to the dtype itself. The
wrappers return the reduced loss, or write it to ``total[0]`` when that is given (here
the device is the host, so that costs a store).
"""
import functools
import math

import numpy as np
from .. import spec
from .activations import sigmoid
from .jit import PARALLEL_MIN_WORK, inline, row_loop, scalar, serial_and_parallel
from .vecmath import cast_like, cast_to, fast_exp, maximum, clear

ELEMENT_BLOCK = 4096  # elements per parallel work item of the elementwise losses
SUM_CHUNK = 1024  # elements summed in the dtype before adding to a float64 total

_BCE, _MSE, _HUBER = range(3)


# ----------------------------------------------------------------------------- helpers
# 0-size stand-ins for outputs given as None, by dtype and number of dimensions.
_STAND_INS = {(np.dtype(t), ndim): np.empty((0,) * ndim, t)
              for t in (np.float32, np.float64) for ndim in (1, 2)}


def _output(array, dtype, ndim):
    """(array for the kernel, whether it is wanted): a 0-size stand-in for None."""
    if array is not None:
        return array, True
    stand_in = _STAND_INS.get((dtype, ndim))
    if stand_in is None:  # another dtype: the kernel will say it does not support it
        stand_in = _STAND_INS[dtype, ndim] = np.empty((0,) * ndim, dtype)
    return stand_in, False


# Scalar arithmetic the wrappers did in Python is done by these, compiled without
# fastmath: in a kernel 'arcp' could turn x / n into x * (1 / n) and 'contract' fuse a
# multiply-add, each a rounding away from what Python (and the reference) computes.
@scalar
def _mean_scale(mean, count):
    """The factor of the gradient: 1 / count for a mean (0 for a mean over nothing)."""
    if not mean:
        return 1.0
    return 1.0 / count if count > 0 else 0.0


@scalar
def _smoothing(label_smoothing, k, like):
    """(1 - e, e / K) in the dtype of array ``like``, rounded as the reference's."""
    return cast_to(1.0 - label_smoothing, like), cast_to(label_smoothing / k, like)


@scalar
def _class_weights(label_smoothing, k, like):
    """(on, off, tsum): the weights of the target class and of the others in the
    reference's t = (1 - e) * onehot + e / K, in the dtype of ``like`` and rounded as it
    rounds them, and sum_k t_k in float64."""
    keep, off = _smoothing(label_smoothing, k, like)
    on = keep + off
    return on, off, np.float64(on) + (k - 1) * np.float64(off)


def _deliver(loss, total):
    """The loss as spec.Backend's losses return it: the float, or None once written to
    ``total[0]`` when that is given."""
    if total is None:
        return loss
    total[0] = loss
    return None


@scalar
def _reduced(total, mean, count):
    """The returned loss: a mean over nothing is NaN, as in torch."""
    if not mean:
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


@row_loop  # inlined, as every row_loop (per row, a call there cost 30 ns a row)
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
def _row_weight(weights, weighted, i, like):
    """Row i's sample weight (1 in the dtype of ``like`` without weights)."""
    return weights[i] if weighted else cast_like(1.0, like)


@inline
def _row_loss(value, weight, losses, want_losses, i):
    """Row i's loss rounded to the dtype of ``weight`` (the reference sums those rounded
    values) times its weight, stored in ``losses[i]`` when wanted."""
    loss = cast_like(value, weight) * weight
    if want_losses:
        losses[i] = loss
    return loss


# ----------------------------------------------------------------------------- softmax
def _build_softmax_rows(loop):
    def softmax_rows(X, out):
        """``out[i] = exp(X[i] - max X[i]) / sum_k exp(X[i, k] - max X[i])``, by rows."""
        for i in loop(X.shape[0]):
            m, s, _ = _exp_row(X, i, out, True)
            s = cast_like(s, m)  # the reference divides by the sum in the dtype
            for j in range(X.shape[1]):
                out[i, j] = out[i, j] / s
    return softmax_rows


_SOFTMAX_ROWS = serial_and_parallel(_build_softmax_rows)


def softmax_rows(X, out):
    """Row-wise softmax of a 2-D ``X`` into ``out`` (apply_output's OUTPUT_SOFTMAX)."""
    _SOFTMAX_ROWS[X.size >= PARALLEL_MIN_WORK](X, out)


# ------------------------------------------------------------------ cross-entropy rows
def _build_cross_entropy_classes(loop):
    def cross_entropy_classes(logits, targets, ignore_index, label_smoothing, mean, losses,
                              want_losses, grad, want_grad, weights, weighted):
        """Softmax cross-entropy with class targets (spec.Backend.softmax_cross_entropy).

        With ``on = (1 - e) + e / K`` the smoothed weight of the target class, ``off = e / K``
        that of the others (rounded as the reference rounds its t) and ``m, s, d`` of
        :func:`_exp_row`: ``loss_i = log s * tsum - off * sum_k d_k - (on - off) * d_y`` and
        ``grad[i, k] = (exp(d_k) / s * tsum - t_k) * (w_i * scale)``, the exponentials
        stored by the pass that sums them and scaled in a second pass over the row (in
        cache); the row's loss is weighted by ``w_i``. Rows whose target is
        ``ignore_index`` (or out of range: counted in ``bad``) give 0; ``scale`` is 1, or
        for a mean 1 / kept rows (0 when none is kept).
        Returns (the reduced loss, bad rows).
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
        on, off, tsum = _class_weights(label_smoothing, k, logits)
        scale = cast_like(_mean_scale(mean, kept), on)
        total = 0.0
        for i in loop(n):
            y = targets[i]
            if y == ignore_index or y < 0 or y >= k:
                if want_losses:
                    losses[i] = 0
                if want_grad:
                    clear(grad[i])
            else:
                w = _row_weight(weights, weighted, i, on)
                m, s, sum_d = _exp_row(logits, i, grad, want_grad)
                total += _row_loss(math.log(s) * tsum - off * sum_d - (on - off) * (logits[i, y] - m),
                                   w, losses, want_losses, i)
                if want_grad:
                    a = cast_like(tsum / s, on)
                    factor = w * scale
                    g = grad[i]
                    e_y = g[y]
                    for j in range(k):
                        g[j] = (g[j] * a - off) * factor
                    g[y] = (e_y * a - on) * factor
        return _reduced(total, mean, kept), bad
    return cross_entropy_classes


def _build_cross_entropy_dense(loop):
    def cross_entropy_dense(logits, targets, label_smoothing, mean, losses, want_losses, grad,
                            want_grad, weights, weighted):
        """Softmax cross-entropy with distribution targets (spec.Backend.softmax_cross_entropy).

        ``t = keep * targets[i] + off`` (keep = 1 - e, off = e / K) and, with ``m, s, d`` of
        :func:`_exp_row`: ``loss_i = sum_k t_k * log s - sum_k t_k d_k``,
        ``grad[i, k] = (exp(d_k) / s * sum_k t_k - t_k) * (w_i * scale)``, the row's loss
        weighted by ``w_i``. Returns the reduced loss.
        """
        n, k = logits.shape
        keep, off = _smoothing(label_smoothing, k, logits)
        scale = cast_to(_mean_scale(mean, n), logits)
        total = 0.0
        for i in loop(n):
            m, s, _ = _exp_row(logits, i, grad, want_grad)
            x, target = logits[i], targets[i]
            tsum = 0.0
            sum_td = 0.0
            for j in range(k):
                t = keep * target[j] + off
                tsum += t
                sum_td += t * (x[j] - m)
            w = _row_weight(weights, weighted, i, off)
            total += _row_loss(math.log(s) * tsum - sum_td, w, losses, want_losses, i)
            if want_grad:
                a = cast_like(tsum / s, off)
                factor = w * scale
                g = grad[i]
                for j in range(k):
                    g[j] = (g[j] * a - (keep * target[j] + off)) * factor
        return _reduced(total, mean, n)
    return cross_entropy_dense


_CROSS_ENTROPY_CLASSES = serial_and_parallel(_build_cross_entropy_classes)
_CROSS_ENTROPY_DENSE = serial_and_parallel(_build_cross_entropy_dense)


def softmax_cross_entropy(logits, targets, label_smoothing, ignore_index, reduction, losses, grad,
                          total=None, weights=None):
    spec.check_weights(weights, logits)
    losses, want_losses = _output(losses, logits.dtype, 1)
    grad, want_grad = _output(grad, logits.dtype, 2)
    weights, weighted = _output(weights, logits.dtype, 1)
    parallel = logits.size >= PARALLEL_MIN_WORK
    if targets.ndim == 1:
        loss, bad = _CROSS_ENTROPY_CLASSES[parallel](
            logits, targets, ignore_index, label_smoothing, reduction == spec.MEAN, losses,
            want_losses, grad, want_grad, weights, weighted)
        if bad:
            raise IndexError(f"{bad} class targets outside [0, {logits.shape[1]}) that are not "
                             "ignore_index")
        return _deliver(loss, total)
    return _deliver(_CROSS_ENTROPY_DENSE[parallel](logits, targets, label_smoothing,
                                                   reduction == spec.MEAN, losses, want_losses,
                                                   grad, want_grad, weights, weighted), total)


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
def _elementwise_kernels(kind):
    """(serial, parallel) kernel of one elementwise loss."""

    def build(loop):
        def elementwise_loss(x, t, delta, mean, losses, want_losses, grad, want_grad, weights,
                             weighted, row_size):
            """``losses = w l(x, t)``, ``grad = dl/dx * (w * scale)`` over flat arrays, by
            blocks of ELEMENT_BLOCK elements, each cut where a row of ``row_size``
            elements (the elements of one weight) ends; returns the reduced loss."""
            n = x.size
            delta = cast_to(delta, x)
            scale = cast_to(_mean_scale(mean, n), x)
            total = 0.0
            for block in loop(-(-n // ELEMENT_BLOCK)):
                start, stop = block * ELEMENT_BLOCK, min(n, (block + 1) * ELEMENT_BLOCK)
                partial = 0.0
                while start < stop:
                    row = start // row_size
                    end = min(stop, (row + 1) * row_size)
                    w = _row_weight(weights, weighted, row, delta)
                    factor = w * scale
                    # 1-D views of the segment: the loop vectorises on them (see
                    # kernels.cpu.dense). An output given as None is a 0-size stand-in, its
                    # slice empty: no overlap with the inputs for LLVM's run-time check to find.
                    xs, ts, ls, gs = x[start:end], t[start:end], losses[start:end], grad[start:end]
                    for i in range(xs.size):
                        loss, g = _elementwise(kind, xs[i], ts[i], delta)
                        loss = loss * w
                        if want_losses:
                            ls[i] = loss
                        if want_grad:
                            gs[i] = g * factor
                        partial += loss
                    start = end
                total += partial
            return _reduced(total, mean, n)
        return elementwise_loss

    return serial_and_parallel(build)


def _flat(array):
    """A 1-D view of ``array``, or a contiguous copy when no view exists."""
    return array.reshape(-1)


def _elementwise_loss(kind, pred, targets, delta, reduction, losses, grad, total, weights):
    spec.check_weights(weights, pred)
    flat_losses, want_losses = _output(None if losses is None else _flat(losses), pred.dtype, 1)
    flat_grad, want_grad = _output(None if grad is None else _flat(grad), pred.dtype, 1)
    weights, weighted = _output(weights, pred.dtype, 1)
    # Without weights the whole array is one row: every block one segment.
    row_size = pred.size // pred.shape[0] if weighted and pred.size else max(pred.size, 1)
    loss = _elementwise_kernels(kind)[pred.size >= PARALLEL_MIN_WORK](
        _flat(pred), _flat(targets), delta, reduction == spec.MEAN, flat_losses, want_losses,
        flat_grad, want_grad, weights, weighted, row_size)
    # A non-contiguous output was computed into a copy: write it back.
    for out, flat in ((losses, flat_losses), (grad, flat_grad)):
        if out is not None and not np.may_share_memory(out, flat):
            out[...] = flat.reshape(out.shape)
    return _deliver(loss, total)


def binary_cross_entropy(logits, targets, reduction, losses, grad, total=None, weights=None):
    return _elementwise_loss(_BCE, logits, targets, 0.0, reduction, losses, grad, total, weights)


def mse(pred, targets, reduction, losses, grad, total=None, weights=None):
    return _elementwise_loss(_MSE, pred, targets, 0.0, reduction, losses, grad, total, weights)


def huber(pred, targets, delta, reduction, losses, grad, total=None, weights=None):
    return _elementwise_loss(_HUBER, pred, targets, delta, reduction, losses, grad, total, weights)
