"""The losses of :mod:`kernels.spec` on CuPy arrays (CUDA C in ``losses.cu``).

Every loss is two or three launches on the current stream: a count of the kept rows
(class targets only, so that a MEAN's gradient scale 1 / count is known on the device),
the loss kernel (per-sample losses, gradient, one float64 partial per block) and
``finish_loss``, which adds the partials in a fixed order into ``total[0]``. With
``total=None`` the sum goes to a cached scratch and is read back: the op's only sync.

Softmax cross-entropy gives a warp to each row up to WIDE_ROW columns and a block to
each wider row. Grid sizes depend on the shape alone, so results are the same from run
to run and from one device to another.

The scratch buffers (:func:`scratch`) are fixed per device: ops that use them must not
run concurrently on two streams. decisions.py shares this module's launch shapes,
scratch and argument checks.
"""
import cupy
import numpy as np

from .. import spec
from .compiler import C_TYPES, Source, scalar

ROW_THREADS = 256  # 8 rows of up to WIDE_ROW columns per block, a warp each
WIDE_ROW = 1024  # wider rows get a block each: a warp would loop over 32+ columns a lane
WIDE_ROW_THREADS = 512
ELEMENT_THREADS = 256
ELEMENTS_PER_THREAD = 4  # elementwise grids: enough work per thread to hide the reduction
COUNT_THREADS = 1024
FINISH_THREADS = 256
MAX_BLOCKS = 4096  # grids are capped (rows and elements loop): the partials' length

GROUPS = {False: "fd::loss::WarpRows", True: "fd::loss::BlockRows"}  # by rows wider than WIDE_ROW
_ELEMENTWISE = {"bce": "fd::loss::Bce", "mse": "fd::loss::Mse", "huber": "fd::loss::Huber"}


def instance(template, dtype, *arguments):
    """The name expression ``template<T, arguments...>`` for ``dtype``."""
    return f"{template}<{', '.join((C_TYPES[np.dtype(dtype)], *arguments))}>"


SOURCE = Source("losses.cu", [
    "count_targets", "finish_loss",
    *(instance(t, d, g) for t in ("cross_entropy_classes", "cross_entropy_dense")
      for d in C_TYPES for g in GROUPS.values()),
    *(instance("elementwise_loss", d, loss) for d in C_TYPES for loss in _ELEMENTWISE.values()),
])

_SCRATCH = {}


def scratch(name, shape, dtype):
    """A device array cached per (current device, name, shape, dtype), allocated once:
    the steady state allocates nothing and a captured CUDA graph keeps valid pointers."""
    key = (cupy.cuda.runtime.getDevice(), name, shape, dtype)
    found = _SCRATCH.get(key)
    if found is None:
        found = _SCRATCH[key] = cupy.empty(shape, dtype)
    return found


# ------------------------------------------------------------------- argument checks
def device_array(array, argument, dtypes, ndim=None, shape=None):
    """``array`` checked to be a CuPy array of one of ``dtypes`` (and ``ndim``/``shape``)."""
    if not isinstance(array, cupy.ndarray):
        raise TypeError(f"{argument} must be a CuPy array; got {type(array).__name__}")
    if array.dtype not in dtypes:
        raise TypeError(f"{argument} must be of dtype {' or '.join(str(np.dtype(d)) for d in dtypes)}; "
                        f"got {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{argument} must have {ndim} dimensions; got shape {array.shape}")
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(f"{argument} must have shape {tuple(shape)}; got {array.shape}")
    return array


FLOATS = tuple(C_TYPES)
INT64 = (np.dtype(np.int64),)
FLOAT64 = (np.dtype(np.float64),)


def _reduction(reduction):
    if reduction not in (spec.NONE, spec.MEAN, spec.SUM):
        raise ValueError(f"reduction must be spec.NONE, spec.MEAN or spec.SUM; got {reduction!r}")
    return reduction


def _output(array, argument, shape, dtype):
    """(array the kernel writes or None, array to copy it into afterwards or None): a
    non-contiguous output is computed into a contiguous temporary."""
    if array is None:
        return None, None
    device_array(array, argument, (dtype,), shape=shape)
    if array.flags.c_contiguous:
        return array, None
    return cupy.empty(shape, dtype), array


def _write_back(*pairs):
    for written, out in pairs:
        if out is not None:
            out[...] = written


def _total(total):
    if total is not None:
        device_array(total, "total", FLOAT64, shape=(1,))
    return total


def _weights(weights, pred):
    """The row weights as the kernels read them (contiguous), or None."""
    if weights is None:
        return None
    device_array(weights, "weights", (pred.dtype,))
    spec.check_weights(weights, pred)
    return cupy.ascontiguousarray(weights)


def grid_blocks(items, per_block):
    """Blocks for ``items`` at ``per_block`` each, capped at MAX_BLOCKS (0 for no items)."""
    return min(-(-items // per_block), MAX_BLOCKS)


def row_launch(n, k):
    """(group, blocks, threads) for n rows of k columns: a warp per row, or a block per
    row wider than WIDE_ROW."""
    wide = k > WIDE_ROW
    threads = WIDE_ROW_THREADS if wide else ROW_THREADS
    return GROUPS[wide], grid_blocks(n, 1 if wide else threads // 32), threads


def _finish(partials, blocks, counts, count, mean, total, k=None):
    """Launch finish_loss; return None when ``total`` is given, else the reduced loss,
    read back (raising IndexError for class targets out of range)."""
    result = total if total is not None else scratch("loss_result", (2,), np.float64)
    bad = None if total is not None else result[1:]
    SOURCE.function("finish_loss")(
        (1,), (FINISH_THREADS,),
        (partials, np.int64(blocks), counts, np.float64(count), np.int32(mean), result, bad))
    if total is not None:
        return None
    value, bad_rows = result.get()
    if bad_rows:
        raise IndexError(f"{int(bad_rows)} class targets outside [0, {k}) that are not ignore_index")
    return float(value)


# ------------------------------------------------------------------------------ ops
def softmax_cross_entropy(logits, targets, label_smoothing, ignore_index, reduction, losses, grad,
                          total=None, weights=None):
    """spec.Backend.softmax_cross_entropy: cross_entropy_classes (class targets, after
    count_targets) or cross_entropy_dense (distribution targets), then finish_loss."""
    device_array(logits, "logits", FLOATS, ndim=2)
    dtype = logits.dtype
    n, k = logits.shape
    if k == 0:
        raise ValueError("logits must have at least one column")
    device_array(targets, "targets", INT64 + (dtype,))
    classes = targets.dtype == np.int64
    device_array(targets, "targets", (targets.dtype,), shape=(n,) if classes else (n, k))
    mean = _reduction(reduction) == spec.MEAN
    losses, losses_out = _output(losses, "losses", (n,), dtype)
    grad, grad_out = _output(grad, "grad", (n, k), dtype)
    _total(total)
    weights = _weights(weights, logits)
    x = cupy.ascontiguousarray(logits)
    t = cupy.ascontiguousarray(targets)
    group, blocks, threads = row_launch(n, k)
    partials = scratch("loss_partials", (MAX_BLOCKS,), np.float64)
    # (1 - e) and e / K rounded to the dtype, and their sum in it, as the reference's t.
    keep = scalar(1.0 - label_smoothing, dtype)
    off = scalar(label_smoothing / k, dtype)
    if classes:
        ignore_index = np.int64(ignore_index)
        counts = scratch("loss_counts", (2,), np.int64)
        SOURCE.function("count_targets")(
            (1,), (COUNT_THREADS,), (t, np.int64(n), np.int64(k), ignore_index, counts))
        if blocks:
            SOURCE.function(instance("cross_entropy_classes", dtype, group))(
                (blocks,), (threads,),
                (x, t, np.int64(n), np.int64(k), ignore_index, keep + off, off, counts,
                 np.int32(mean), weights, losses, grad, partials))
        _write_back((losses, losses_out), (grad, grad_out))
        return _finish(partials, blocks, counts, 0.0, mean, total, k)
    if blocks:
        scale = scalar(1.0 / n if mean else 1.0, dtype)
        SOURCE.function(instance("cross_entropy_dense", dtype, group))(
            (blocks,), (threads,),
            (x, t, np.int64(n), np.int64(k), keep, off, scale, weights, losses, grad, partials))
    _write_back((losses, losses_out), (grad, grad_out))
    return _finish(partials, blocks, None, float(n), mean, total)


def _elementwise(loss, pred, pred_argument, targets, delta, reduction, losses, grad, total, weights):
    """elementwise_loss over the flat arrays, then finish_loss; MEAN divides by the size.
    Element e's weight is ``weights[e // row_size]``, row_size the elements of a row."""
    device_array(pred, pred_argument, FLOATS)
    dtype, shape, n = pred.dtype, pred.shape, pred.size
    device_array(targets, "targets", (dtype,), shape=shape)
    mean = _reduction(reduction) == spec.MEAN
    losses, losses_out = _output(losses, "losses", shape, dtype)
    grad, grad_out = _output(grad, "grad", shape, dtype)
    _total(total)
    weights = _weights(weights, pred)
    row_size = n // shape[0] if weights is not None and n else 1
    partials = scratch("loss_partials", (MAX_BLOCKS,), np.float64)
    blocks = grid_blocks(n, ELEMENT_THREADS * ELEMENTS_PER_THREAD)
    if blocks:
        SOURCE.function(instance("elementwise_loss", dtype, _ELEMENTWISE[loss]))(
            (blocks,), (ELEMENT_THREADS,),
            (cupy.ascontiguousarray(pred), cupy.ascontiguousarray(targets), np.int64(n),
             scalar(delta, dtype), scalar(1.0 / n if mean else 1.0, dtype), weights, np.int64(row_size),
             losses, grad, partials))
    _write_back((losses, losses_out), (grad, grad_out))
    return _finish(partials, blocks, None, float(n), mean, total)


def binary_cross_entropy(logits, targets, reduction, losses, grad, total=None, weights=None):
    """spec.Backend.binary_cross_entropy (fd::loss::Bce)."""
    return _elementwise("bce", logits, "logits", targets, 0.0, reduction, losses, grad, total, weights)


def mse(pred, targets, reduction, losses, grad, total=None, weights=None):
    """spec.Backend.mse (fd::loss::Mse)."""
    return _elementwise("mse", pred, "pred", targets, 0.0, reduction, losses, grad, total, weights)


def huber(pred, targets, delta, reduction, losses, grad, total=None, weights=None):
    """spec.Backend.huber (fd::loss::Huber); ``delta`` is rounded to the dtype, as NumPy
    rounds a Python float against an array."""
    return _elementwise("huber", pred, "pred", targets, delta, reduction, losses, grad, total, weights)
