"""``out = a @ b`` through cuBLAS, called directly, so that a CUDA graph can record it.

CuPy refuses any cuBLAS call while a stream is being captured (its ``cublas.setStream``
raises NotImplementedError: "calling cuBLAS API during stream capture is currently
unsupported"), although cuBLAS supports capture where the library allocates nothing
during it. So the backend's GEMMs call ``cublasGemmEx`` of the cuBLAS library CuPy has
loaded, through ctypes, on a handle of their own (one per thread and device) with a fixed
workspace (``cublasSetWorkspace``): a recording then holds no allocation. cuBLAS resets a
handle's workspace whenever its stream is set, so both are set together, at a GEMM on a
stream other than the handle's last.

Layouts: cuBLAS is column-major. A C-contiguous (r, c) array is, to cuBLAS, its transpose
stored with leading dimension c; an F-contiguous one (a transposed C array, such as the
``W.T`` and ``X.T`` of a backward pass) is the matrix itself with leading dimension r.
``C = A B`` in row-major is ``C^T = B^T A^T`` in column-major, so the call passes B first.
Operands of any other layout or dtype are copied first, and an output that is not
C-contiguous (or overlaps an operand) is computed into a temporary and copied back; the
engine's arrays need neither.

Precision: float32 GEMMs compute in FP32 (``CUBLAS_COMPUTE_32F``) or, where
:mod:`kernels.cuda.precision` allows TF32, ``CUBLAS_COMPUTE_32F_FAST_TF32``; float64 in
``CUBLAS_COMPUTE_64F``. These are the types CuPy's own matmul passes.
"""
from __future__ import annotations

import ctypes
import os
import threading

import cupy
import numpy as np

from . import precision

# cuBLAS's and CUDA's enumerations (cublas_api.h, library_types.h).
_OP_N, _OP_T = 0, 1
_CUDA_TYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}  # CUDA_R_32F, CUDA_R_64F
_COMPUTE_32F, _COMPUTE_32F_FAST_TF32, _COMPUTE_64F = 68, 77, 70
_GEMM_DEFAULT = -1
_STATUS_NAMES = {1: "NOT_INITIALIZED", 3: "ALLOC_FAILED", 7: "INVALID_VALUE", 8: "ARCH_MISMATCH",
                 11: "MAPPING_ERROR", 13: "EXECUTION_FAILED", 14: "INTERNAL_ERROR",
                 15: "NOT_SUPPORTED", 16: "LICENSE_ERROR"}

# The workspace cuBLAS's documentation recommends: 32 MiB on Hopper (compute capability
# 9.0) and later, 4 MiB before.
_WORKSPACE_BYTES = {True: 32 << 20, False: 4 << 20}

_ONE = {np.dtype(np.float32): ctypes.c_float(1.0), np.dtype(np.float64): ctypes.c_double(1.0)}
_ZERO = {np.dtype(np.float32): ctypes.c_float(0.0), np.dtype(np.float64): ctypes.c_double(0.0)}

_library = None
_handles = threading.local()  # .by_device: device id -> _Handle


def _loaded_cublas_path():
    """The path of the libcublas CuPy's cuBLAS module loaded, read from the process's
    memory map (Linux), or None."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip()
                if os.path.basename(path).startswith("libcublas.so"):
                    return path
    except OSError:
        pass
    return None


def library():
    """cuBLAS as a ctypes library: the one CuPy uses (never a second copy where it can
    be found), else the one of CUDA's major version on the loader's path."""
    global _library
    if _library is None:
        from cupy_backends.cuda.libs import cublas  # noqa: F401 (loads libcublas)
        major = cupy.cuda.runtime.runtimeGetVersion() // 1000
        candidates = [_loaded_cublas_path(), f"libcublas.so.{major}", f"cublas64_{major}.dll"]
        errors = []
        for candidate in filter(None, candidates):
            try:
                lib = ctypes.CDLL(candidate)
                break
            except OSError as error:
                errors.append(str(error))
        else:
            raise OSError(f"cuBLAS cannot be loaded through ctypes ({'; '.join(errors)})")
        _declare(lib)
        _library = lib
    return _library


def _declare(lib):
    p, i, size = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    signatures = {
        "cublasCreate_v2": [ctypes.POINTER(p)],
        "cublasSetStream_v2": [p, p],
        "cublasSetWorkspace_v2": [p, p, size],
        "cublasGemmEx": [p, i, i, i, i, i, p, p, i, i, p, i, i, p, p, i, i, i, i],
    }
    for name, argtypes in signatures.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int


def _check(status, call):
    if status != 0:
        raise RuntimeError(f"{call} failed: CUBLAS_STATUS_{_STATUS_NAMES.get(status, status)}")


class _Handle:
    """A cuBLAS handle of the current device with its fixed workspace, and the stream it
    was last set to."""

    def __init__(self):
        lib = library()
        handle = ctypes.c_void_p()
        _check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self.pointer = handle.value
        hopper = int(cupy.cuda.Device().compute_capability) >= 90
        self.workspace = cupy.empty(_WORKSPACE_BYTES[hopper], dtype=np.uint8)
        self.stream = None

    def on(self, stream):
        """The handle, set to run on ``stream`` (a pointer) with its own workspace."""
        if stream != self.stream:
            lib = library()
            _check(lib.cublasSetStream_v2(self.pointer, stream), "cublasSetStream")
            _check(lib.cublasSetWorkspace_v2(self.pointer, self.workspace.data.ptr,
                                             self.workspace.nbytes), "cublasSetWorkspace")
            self.stream = stream
        return self.pointer


def _handle():
    by_device = getattr(_handles, "by_device", None)
    if by_device is None:
        by_device = _handles.by_device = {}
    device = cupy.cuda.runtime.getDevice()
    handle = by_device.get(device)
    if handle is None:
        handle = by_device[device] = _Handle()
    return handle


def _operand(x, dtype):
    """``x`` as cuBLAS reads it: (array, op, leading dimension) of the column-major
    matrix ``x^T``, copying where neither C nor F order holds."""
    if x.dtype != dtype:
        x = x.astype(dtype)
    if x.flags.c_contiguous:
        return x, _OP_N, max(x.shape[1], 1)
    if x.flags.f_contiguous:
        return x, _OP_T, max(x.shape[0], 1)
    x = cupy.ascontiguousarray(x)
    return x, _OP_N, max(x.shape[1], 1)


def _compute_type(dtype):
    if dtype == np.float64:
        return _COMPUTE_64F
    return _COMPUTE_32F_FAST_TF32 if precision.get_matmul_precision() == "high" else _COMPUTE_32F


def matmul(a, b, out):
    """``out = a @ b``: a (N, K), b (K, M), out (N, M), one float dtype for the result."""
    if a.ndim != 2 or b.ndim != 2 or out.ndim != 2:
        raise ValueError(f"a, b, out: matmul takes 2-D arrays, got shapes {a.shape}, {b.shape}, {out.shape}")
    n, k = a.shape
    if b.shape[0] != k or out.shape != (n, b.shape[1]):
        raise ValueError(f"a, b, out: shapes {a.shape} @ {b.shape} -> {out.shape} do not match")
    dtype = out.dtype
    if dtype not in _CUDA_TYPES:
        raise TypeError(f"out: matmul writes float32 or float64, got {dtype}")
    m = out.shape[1]
    if n == 0 or m == 0:
        return
    if k == 0:
        out.fill(0)
        return
    target = out
    if not out.flags.c_contiguous or cupy.may_share_memory(out, a) or cupy.may_share_memory(out, b):
        target = cupy.empty((n, m), dtype)
    a, op_a, ld_a = _operand(a, dtype)
    b, op_b, ld_b = _operand(b, dtype)
    cuda_type = _CUDA_TYPES[dtype]
    handle = _handle().on(cupy.cuda.get_current_stream().ptr)
    _check(library().cublasGemmEx(
        handle, op_b, op_a, m, n, k, ctypes.addressof(_ONE[dtype]),
        b.data.ptr, cuda_type, ld_b, a.data.ptr, cuda_type, ld_a,
        ctypes.addressof(_ZERO[dtype]), target.data.ptr, cuda_type, m,
        _compute_type(dtype), _GEMM_DEFAULT), "cublasGemmEx")
    if target is not out:
        out[...] = target
