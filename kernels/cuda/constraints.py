"""Weight constraints applied after an update: max_norm (see kernels.spec), one launch of
constraints.cu per weight matrix; deterministic column norms (fixed per-thread order,
then a fixed tree). With ``status``, the kernel reads ``status[GUARD_SKIP]`` itself and
does nothing for a skipped step, so nothing here waits for the device."""
import cupy
import numpy as np

from ..spec import GUARD_SKIP, MAX_NORM_EPS
from .compiler import Source, instances

_SOURCE = Source("constraints.cu", instances("max_norm_columns"))

COLUMNS = 32  # per block: fd::constraints::COLUMNS of constraints.cuh
THREADS = 256  # per block: COLUMNS * fd::constraints::ROW_LANES
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def max_norm(W, max_norm_value, status=None):
    """Keras MaxNorm on the columns of the CuPy matrix ``W`` (kernels.spec.Backend.max_norm)."""
    if not isinstance(W, cupy.ndarray) or W.dtype not in _FLOATS:
        raise TypeError(f"W must be a float32 or float64 CuPy array; got {type(W).__name__} "
                        f"{getattr(W, 'dtype', '')}")
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D weight matrix (fan_in, fan_out); got shape {W.shape}")
    skip = None
    if status is not None:
        if not isinstance(status, cupy.ndarray) or status.dtype != np.float64 or status.size <= GUARD_SKIP:
            raise TypeError("status must be the float64 CuPy record of guard_update")
        skip = status[GUARD_SKIP:GUARD_SKIP + 1]
    rows, cols = W.shape
    if W.size == 0:
        return
    work = W if W.flags.c_contiguous else cupy.ascontiguousarray(W)
    _SOURCE.function("max_norm_columns", W.dtype)(
        (-(-cols // COLUMNS),), (THREADS,),
        [work, np.int64(rows), np.int64(cols), np.float64(max_norm_value), np.float64(MAX_NORM_EPS),
         skip])
    if work is not W:
        W[...] = work
