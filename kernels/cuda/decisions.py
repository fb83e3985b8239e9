"""The per-step decisions of :mod:`kernels.spec` on CuPy arrays (CUDA C in ``decisions.cu``):
``guard_update`` (one single-block kernel) and ``metric_sums`` (a metric kernel writing
a float64 total and count per block, then ``metric_finish`` adding them in a fixed order).
Neither waits for the device.
"""
import re

import cupy
import numpy as np

from .. import spec
from .compiler import C_TYPES, Source, scalar
from .losses import (ELEMENT_THREADS, ELEMENTS_PER_THREAD, FINISH_THREADS, FLOAT64, FLOATS, GROUPS,
                     INT64, MAX_BLOCKS, device_array, grid_blocks, instance, row_launch, scratch)

GUARD_THREADS = 256  # segments per thread beyond that: models have tens of segments

_KINDS = (spec.METRIC_ACCURACY, spec.METRIC_SQUARED_ERROR, spec.METRIC_ABSOLUTE_ERROR,
          spec.METRIC_CROSS_ENTROPY)

SOURCE = Source("decisions.cu", [
    "guard_update", "metric_finish",
    *(instance("metric_rows", d, target, group) for d in C_TYPES for target in ("long long", C_TYPES[d])
      for group in GROUPS.values()),
    *(instance("metric_elements", d, target) for d in C_TYPES for target in ("long long", C_TYPES[d])),
])


def _check_constants():
    """decisions.cu spells out spec's GUARD_*, REASON_* and METRIC_* codes and
    CLIP_NORM_EPS; fail at import rather than write a record the engine misreads."""
    found = dict(re.findall(r"\b((?:GUARD|REASON|METRIC)_[A-Z_]+|CLIP_NORM_EPS) = ([0-9.e+-]+)",
                            SOURCE.code))
    wrong = [name for name, value in found.items() if float(value) != getattr(spec, name, None)]
    expected = [name for name in dir(spec) if name.startswith(("GUARD_", "REASON_", "METRIC_"))
                and name != "GUARD_SIZE"] + ["CLIP_NORM_EPS"]
    if wrong or sorted(found) != sorted(expected):
        raise ImportError("kernels/cuda/decisions.cu and kernels/spec.py disagree on the codes "
                          f"{wrong or sorted(set(expected) ^ set(found))}")


_check_constants()

def _record(array, argument, shape):
    """A float64 array the kernels update in place, so it must be contiguous."""
    device_array(array, argument, FLOAT64, shape=shape)
    if not array.flags.c_contiguous:
        raise ValueError(f"{argument} must be C-contiguous: it is updated in place")
    return array


def _number(value, argument):
    try:
        return np.float64(float(value))
    except (TypeError, ValueError):
        raise TypeError(f"{argument} must be a number (math.inf to disable); got {value!r}") from None


def guard_update(total, sq_norms, clip_norm, clip_global_norm, step, sticky, seg_scale, status) -> None:
    """spec.Backend.guard_update, one block."""
    device_array(total, "total", FLOAT64, shape=(1,))
    device_array(sq_norms, "sq_norms", FLOAT64, ndim=1)
    segments = sq_norms.shape[0]
    _record(seg_scale, "seg_scale", (segments,))
    _record(status, "status", (spec.GUARD_SIZE,))
    SOURCE.function("guard_update")(
        (1,), (GUARD_THREADS,),
        (total, cupy.ascontiguousarray(sq_norms), np.int64(segments),
         _number(clip_norm, "clip_norm"), _number(clip_global_norm, "clip_global_norm"),
         np.int64(step), np.int32(bool(sticky)), seg_scale, status))


def metric_sums(kind, threshold, scores, targets, sums) -> None:
    """spec.Backend.metric_sums: metric_rows (accuracy and cross-entropy of several
    outputs) or metric_elements (the errors, and one output), then metric_finish. The
    count is the device's: accuracy and cross-entropy skip class targets outside
    [0, max(K, 2))."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of spec's METRIC_* codes; got {kind!r}")
    device_array(scores, "scores", FLOATS, ndim=2)
    dtype = scores.dtype
    n, k = scores.shape
    if k == 0:
        raise ValueError("scores must have at least one column")
    _record(sums, "sums", (2,))
    device_array(targets, "targets", INT64 + (dtype,))
    classes = targets.dtype == np.int64
    if classes and kind in (spec.METRIC_SQUARED_ERROR, spec.METRIC_ABSOLUTE_ERROR):
        raise TypeError(f"targets must be of dtype {dtype} for an error metric; got int64")
    device_array(targets, "targets", (targets.dtype,), shape=(n,) if classes else (n, k))
    if n == 0:
        return
    x = cupy.ascontiguousarray(scores)
    t = cupy.ascontiguousarray(targets)
    target_type = "long long" if classes else C_TYPES[dtype]
    partials = scratch("metric_partials", (2, MAX_BLOCKS), np.float64)
    totals, counts = partials[0], partials[1]  # a block's total and count (rows kept)
    if k > 1 and kind in (spec.METRIC_ACCURACY, spec.METRIC_CROSS_ENTROPY):
        group, blocks, threads = row_launch(n, k)
        SOURCE.function(instance("metric_rows", dtype, target_type, group))(
            (blocks,), (threads,), (np.int32(kind), x, t, np.int64(n), np.int64(k), totals, counts))
    else:
        blocks = grid_blocks(n * k, ELEMENT_THREADS * ELEMENTS_PER_THREAD)
        SOURCE.function(instance("metric_elements", dtype, target_type))(
            (blocks,), (ELEMENT_THREADS,),
            (np.int32(kind), x, t, np.int64(n * k), scalar(threshold, dtype), totals, counts))
    SOURCE.function("metric_finish")((1,), (FINISH_THREADS,), (totals, counts, np.int64(blocks), sums))
