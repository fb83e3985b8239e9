"""Precision of the float32 GEMMs of the CuPy backend (cuBLAS, :mod:`kernels.cuda.gemm`).

* ``"highest"``: plain FP32 (cuBLAS compute type ``CUBLAS_COMPUTE_32F``), what the
  reference's float32 agreement assumes; CuPy's default.
* ``"high"``: TF32 tensor cores allowed for float32 GEMMs (``CUBLAS_COMPUTE_32F_FAST_TF32``):
  inputs rounded to a 10-bit mantissa, accumulation in FP32; much faster on Ampere
  (compute capability 8.0) and later. float64 GEMMs are never affected.

Mechanism: CuPy's compute-type table, ``cupy._core.set_compute_type(dtype, type)`` /
``get_compute_type(dtype)`` with the constants ``COMPUTE_TYPE_DEFAULT`` and
``COMPUTE_TYPE_TF32`` of ``cupy._core._routines_linalg``. :mod:`kernels.cuda.gemm` reads
that table at every GEMM, as CuPy's own 2-D matmul does, and passes the matching cuBLAS
compute type to ``cublasGemmEx``, so a change applies to the next GEMM. It is the switch
behind CuPy's documented ``CUPY_TF32`` environment variable, which only seeds the table
once, at the first float32 GEMM, and so cannot change the precision at run time. It is
not in CuPy's public API reference (hence this one module that touches it); the other
route, a TF32 math mode on CuPy's cuBLAS handle (``cublasSetMathMode``), is per handle,
i.e. per device and thread, and CuPy's own half-precision path resets it.

The table is per process, not per device. CuPy accepts TF32 only on a device of compute
capability 8.0 or later (the current device when setting): elsewhere it warns and keeps
FP32, and :func:`get_matmul_precision` then says ``"highest"``, what the GEMMs do.
Setting ``"highest"`` needs no device; setting ``"high"`` asks the current device its
compute capability.
"""
import numpy as np
from cupy._core import _routines_linalg as _linalg

_COMPUTE_TYPES = {"highest": _linalg.COMPUTE_TYPE_DEFAULT, "high": _linalg.COMPUTE_TYPE_TF32}


def set_matmul_precision(precision):
    """Let float32 GEMMs use TF32 tensor cores (``"high"``) or not (``"highest"``)."""
    compute_type = _COMPUTE_TYPES.get(precision)
    if compute_type is None:
        raise ValueError(f"precision: {precision!r} is not one of {sorted(_COMPUTE_TYPES)}")
    _linalg.set_compute_type(np.float32, compute_type)


def get_matmul_precision():
    """``"high"`` when float32 GEMMs may use TF32 now (set here or by CUPY_TF32=1), else
    ``"highest"``."""
    tf32 = _linalg.get_compute_type(np.float32) == _linalg.COMPUTE_TYPE_TF32
    return "high" if tf32 else "highest"
