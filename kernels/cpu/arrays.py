"""Array helpers of the Numba backend: its arrays are NumPy arrays.

``empty`` and ``zeros`` align their data to 64 bytes, a cache line and an AVX-512
register, so the compiled loops start on whole vectors and no line is split between
two threads' rows when a row is a multiple of 16 float32.
"""
import numpy as np

ALIGNMENT = 64


def to_device(host, dtype):
    return np.ascontiguousarray(host, dtype=dtype)


def to_host(array):
    return np.asarray(array)


def empty(shape, dtype):
    dtype = np.dtype(dtype)
    shape = (shape,) if np.ndim(shape) == 0 else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def zeros(shape, dtype):
    array = empty(shape, dtype)
    array.fill(0)
    return array


def copy_into(dst, src):
    np.copyto(dst, src)


def take_rows(src, index, out):
    np.take(src, index, axis=0, out=out)


def capture(work):
    """None: a compiled op is a function call with no launch to save, so the numba backend
    records no graphs (kernels.spec.Backend.capture); the caller runs ``work``."""
    return None
