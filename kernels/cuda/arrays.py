"""Array helpers of the CuPy backend: its arrays are CuPy arrays on the current device.

Host-to-device copies go through :func:`cupy.asarray`, which stages a pageable NumPy
array in pinned memory and copies it on the current stream without waiting for the
device, so the host array may be reused as soon as the call returns.
"""
import cupy
import numpy as np


def to_device(host, dtype):
    """A C-contiguous CuPy array of ``host``'s values in ``dtype``; ``host`` itself when it
    already is one."""
    if isinstance(host, cupy.ndarray) and host.dtype == dtype and host.flags.c_contiguous:
        return host
    return cupy.asarray(host, dtype=dtype, order="C")


def to_host(array):
    """A NumPy array of ``array``'s values (waits for the device); NumPy arrays as they are."""
    if isinstance(array, np.ndarray):
        return array
    return cupy.asnumpy(array)


def empty(shape, dtype):
    return cupy.empty(shape, dtype=dtype)


def zeros(shape, dtype):
    return cupy.zeros(shape, dtype=dtype)


def copy_into(dst, src):
    """``dst[...] = src``; a host ``src`` is sent to the device in ``dst``'s dtype first."""
    if not isinstance(src, cupy.ndarray):
        src = cupy.asarray(src, dtype=dst.dtype)
    dst[...] = src


def take_rows(src, index, out):
    cupy.take(src, index, axis=0, out=out)


def all_finite(values):
    """spec.Backend.all_finite: a CuPy array on its device (one reduction, whose result
    the host waits for), a NumPy array on the host, where it is."""
    if values.dtype.kind != "f":
        return True  # integers and bools hold no NaN or inf (CuPy's isfinite takes floats only)
    if isinstance(values, np.ndarray):
        return bool(np.isfinite(values).all())
    return bool(cupy.isfinite(values).all())
