"""Weight constraints applied after an update: max_norm (see kernels.spec).

Column reductions by blocks of columns, rows in order within a block (as the dense
backward's column sums): each column's sum of squares adds in the same order whatever
the threads, so the result has the same bits serially and in parallel. The float64
sums live in a scratch row the wrapper allocates per call (freed when it returns).
"""
import math

import numpy as np
from numba import prange

from .. import spec
from .jit import PARALLEL_MIN_WORK, column_width, serial_and_parallel
from .vecmath import clear

_EPS = spec.MAX_NORM_EPS


def _build_max_norm(loop):
    parallel = loop is prange

    def max_norm(W, max_norm_value, sums):
        """Keras MaxNorm on the columns of W (spec.Backend.max_norm): ``sums`` (fan_out,)
        float64 receives each column's sum of squares, then its factor
        ``min(n, c) / (eps + n)``, which multiplies the column in float64."""
        n, m = W.shape
        if parallel:
            width = column_width(m)
        else:
            width = max(m, 1)  # one block
        for block in loop(-(-m // width)):
            c0 = block * width
            c1 = min(m, c0 + width)
            factor = sums[c0:c1]
            clear(factor)
            for i in range(n):
                row = W[i, c0:c1]
                for j in range(row.size):
                    w = np.float64(row[j])
                    factor[j] += w * w
            for j in range(factor.size):
                norm = math.sqrt(factor[j])
                factor[j] = (max_norm_value if norm > max_norm_value else norm) / (_EPS + norm)
            for i in range(n):
                row = W[i, c0:c1]
                for j in range(row.size):
                    row[j] = np.float64(row[j]) * factor[j]
    return max_norm


_MAX_NORM = serial_and_parallel(_build_max_norm)


def max_norm(W, max_norm_value, status=None):
    if status is not None and status[spec.GUARD_SKIP] != 0:
        return
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D weight matrix (fan_in, fan_out); got shape {W.shape}")
    _MAX_NORM[W.size >= PARALLEL_MIN_WORK](W, float(max_norm_value), np.empty(W.shape[1]))
