"""Array helpers of the NumPy backend."""
import numpy as np


def to_device(host, dtype):
    return np.ascontiguousarray(host, dtype=dtype)


def to_host(array):
    return np.asarray(array)


def empty(shape, dtype):
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype)


def copy_into(dst, src):
    dst[...] = src


def take_rows(src, index, out):
    np.take(src, index, axis=0, out=out)


def all_finite(values):
    """spec.Backend.all_finite: ``np.isfinite(values).all()``."""
    return bool(np.isfinite(values).all())


def capture(work):
    """None: NumPy has no graphs (kernels.spec.Backend.capture); the caller runs ``work``."""
    return None
