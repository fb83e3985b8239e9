"""BLAS GEMM callable from compiled kernels, and the BLAS thread count.

Why: so that ``dense_forward`` and ``dense_backward`` are ONE compiled call each, GEMMs
and elementwise pass together. On small layers the calls themselves are the cost:
each call from Python into numba unboxes its arguments (0.3-1 us), ``np.matmul`` adds
some 0.3 us to the BLAS routine, and a backward made three calls. (Numba's own
``np.dot`` goes through SciPy's BLAS, needs SciPy, and copies non-contiguous operands.)

How: once NumPy is imported its BLAS is mapped into the process. We find it (and any
other loaded BLAS) in ``/proc/self/maps``, NumPy's own first, take the first CBLAS gemm
symbol of :data:`_GEMM_NAMES` it exports, and register its address with LLVM under a
name of our own (``llvmlite.binding.add_symbol``). Compiled code calls that name through
``numba.types.ExternalFunction``, so the address is resolved when the code is linked:
also when numba loads it from its disk cache in a later process, where the library may
be mapped elsewhere. Our names always have the ILP64 signature (64-bit sizes); an LP64
BLAS is reached through a compiled trampoline that narrows them, so the cached kernels
are the same whichever BLAS a process finds (the Python wrappers check that sizes fit
32 bits first: :func:`fits`).

Two libraries: GEMMs of at least :data:`kernels.cpu.mkl.LARGE_GEMM_WORK` multiply-adds
call a second set of our names, bound to MKL where kernels.cpu.mkl chooses it (faster on
large GEMMs, slower on small ones) and otherwise to the same library as the rest. The
threshold is OpenBLAS's own for going multi-threaded, so NumPy's BLAS is left only the
GEMMs it runs on the calling thread, and no second thread pool wakes during a step.

Where none is found (another OS, a BLAS without CBLAS symbols), :data:`ENABLED` is
False, our names point at a stand-in that does nothing (the kernels still link), and
kernels.cpu.dense runs ``np.matmul`` and tells the same kernels to skip their GEMMs.
Tests set ENABLED to False to take that path.
"""
import ctypes
import os
import re

import numpy as np
from llvmlite import binding as llvm
from numba import cfunc, njit, types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .jit import composite, scalar
from .mkl import LARGE_GEMM_WORK, usable_library

ROW_MAJOR, COL_MAJOR = 101, 102  # CBLAS_ORDER
NO_TRANS, TRANS = 111, 112  # CBLAS_TRANSPOSE

# (symbol pattern, integer width): ILP64 names first, NumPy's (scipy-openblas) first of all.
# ``scipy_cblas_?gemm`` is scipy-openblas32, which NumPy uses on some platforms.
# ``cblas_?gemm_64`` is the ILP64 interface of MKL (2024 and later) beside its LP64 one.
_GEMM_NAMES = (("scipy_cblas_{}gemm64_", 64), ("cblas_{}gemm64_", 64), ("cblas_{}gemm_64", 64),
               ("scipy_cblas_{}gemm", 32), ("cblas_{}gemm", 32))
# (set, get) thread-count functions of OpenBLAS builds and of MKL, all taking/returning int.
_THREAD_NAMES = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                 ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
                 ("openblas_set_num_threads", "openblas_get_num_threads"),
                 ("MKL_Set_Num_Threads", "MKL_Get_Max_Threads"))
_CONFIG_NAMES = ("scipy_openblas_get_config64_", "scipy_openblas_get_config", "openblas_get_config")
_LIBRARY_NAME = re.compile(r"(openblas|mkl|blas)[^/]*\.so", re.IGNORECASE)

# The names compiled kernels call, with 64-bit sizes, bound to whatever BLAS is found.
SYMBOLS = {np.dtype(np.float32): "fusedense_cblas_sgemm", np.dtype(np.float64): "fusedense_cblas_dgemm"}
LARGE_SYMBOLS = {dtype: f"{name}_large" for dtype, name in SYMBOLS.items()}
INT32_MAX = 2**31 - 1


def _gemm_signature(real, size):
    pointer = types.CPointer(real)
    enum = types.int32
    return types.void(enum, enum, enum, size, size, size, real, pointer, size, pointer, size, real,
                      pointer, size)


_SIGNATURES = {dtype: _gemm_signature(types.float32 if dtype == np.float32 else types.float64,
                                      types.int64) for dtype in SYMBOLS}
# (small, large) ExternalFunctions, by numba float type
_GEMMS = {real: tuple(types.ExternalFunction(symbols[np.dtype(as_dtype(real))],
                                             _SIGNATURES[np.dtype(as_dtype(real))])
                      for symbols in (SYMBOLS, LARGE_SYMBOLS))
          for real in (types.float32, types.float64)}


def loaded_libraries():
    """Paths of the BLAS-like shared libraries mapped into this process, NumPy's first.

    Empty where /proc/self/maps does not exist (not Linux).
    """
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        fields = line.split(maxsplit=5)
        path = fields[5] if len(fields) == 6 else ""
        if path.startswith("/") and _LIBRARY_NAME.search(os.path.basename(path)) and path not in paths:
            paths.append(path)
    numpy_root = os.path.dirname(os.path.dirname(np.__file__))
    ours = [p for p in paths if os.path.basename(os.path.dirname(p)).startswith("numpy")
            and p.startswith(numpy_root)]
    return ours + [p for p in paths if p not in ours]


def _address(library, name):
    try:
        return ctypes.cast(getattr(library, name), ctypes.c_void_p).value
    except AttributeError:
        return None


def _reports_ilp64(library):
    """Whether an OpenBLAS says it was built with 64-bit integers (then even its
    unsuffixed names take them); False for other libraries."""
    for name in _CONFIG_NAMES:
        if _address(library, name):
            get_config = getattr(library, name)
            get_config.restype = ctypes.c_char_p
            return b"USE64BITINT" in (get_config() or b"")
    return False


def _find_gemm(library):
    """(pattern, integer width) of the first gemm pair ``library`` exports, or None."""
    for pattern, width in _GEMM_NAMES:
        if all(_address(library, pattern.format(t)) for t in "sd"):
            if width == 32 and _reports_ilp64(library):
                width = 64
            return pattern, width
    return None


def _symbol_function(dtype, body):
    """A compiled function of our ILP64 gemm signature for ``dtype`` that runs ``body``
    (a compiled function of the same arguments); LLVM keeps only its address."""
    @cfunc(_SIGNATURES[dtype])
    def function(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        body(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    return function


def _narrowing(dtype, name):
    """The body of a trampoline to the LP64 gemm ``name``: sizes narrowed to int32."""
    real = types.float32 if dtype == np.float32 else types.float64
    narrow = types.ExternalFunction(name, _gemm_signature(real, types.int32))
    i32 = np.int32

    @njit
    def body(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        narrow(order, trans_a, trans_b, i32(m), i32(n), i32(k), alpha, a, i32(lda), b, i32(ldb),
               beta, c, i32(ldc))

    return body


@njit
def _unbound(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """What our symbols resolve to where no BLAS was found: nothing. Kernels reference
    them (so they link), but the wrappers then never let them run a GEMM."""


class _Binding:
    """The BLAS libraries found for this process: where they are and what they export."""

    def __init__(self):
        self.path = None  # the library of the kernels' GEMMs, None when no gemm was found
        self.gemm_names = None  # its two gemm symbols
        self.large_path = None  # the library of the large GEMMs (often the same)
        self.large_names = None
        self.wide = True  # whether the sizes of both are 64-bit
        self._functions = []  # compiled functions behind our symbols, kept alive: LLVM
        # holds only their addresses
        self._threads = []  # (set, get) ctypes functions of each library bound

    def bind(self, paths, large=None):
        """Register the first gemm pair found in ``paths``, and ``large``'s (default: the
        same) for GEMMs of at least LARGE_GEMM_WORK multiply-adds; their thread functions."""
        found = self._first_gemm(paths)
        if found is None:
            self.path, self.gemm_names, self.large_path, self.large_names = None, None, None, None
            self.wide, self._threads = True, []
            for dtype in SYMBOLS:
                for symbols in (SYMBOLS, LARGE_SYMBOLS):
                    self._add_symbol(symbols[dtype], _symbol_function(dtype, _unbound))
            return False
        large_found = (self._first_gemm([large]) if large else None) or found
        self.path, self.gemm_names, wide = self._bind_pair(SYMBOLS, *found)
        self.large_path, self.large_names, large_wide = self._bind_pair(LARGE_SYMBOLS, *large_found)
        self.wide = wide and large_wide
        libraries = [found[1]] if large_found is found else [large_found[1], found[1]]
        self._threads = [t for t in map(self._thread_functions, libraries) if t is not None]
        return True

    @staticmethod
    def _first_gemm(paths):
        """(path, library, pattern, integer width) of the first of ``paths`` exporting a
        gemm pair, or None."""
        for path in paths:
            try:
                library = ctypes.CDLL(path)
            except OSError:
                continue
            found = _find_gemm(library)
            if found is not None:
                return (path, library) + found
        return None

    def _bind_pair(self, symbols, path, library, pattern, width):
        """Point ``symbols`` (ours, by dtype) at ``library``'s gemm pair; (path, names, wide)."""
        names = tuple(pattern.format(t) for t in "sd")
        for (dtype, symbol), name in zip(symbols.items(), names):
            if width == 64:
                self._add_symbol(symbol, _address(library, name))
            else:  # through a trampoline that narrows the sizes
                llvm.add_symbol(f"{symbol}_lp64", _address(library, name))
                self._add_symbol(symbol, _symbol_function(dtype, _narrowing(dtype, f"{symbol}_lp64")))
        return path, names, width == 64

    def _add_symbol(self, symbol, target):
        """Point ``symbol`` at an address or at a compiled function (kept alive here)."""
        if not isinstance(target, int):
            self._functions.append(target)
            target = target.address
        llvm.add_symbol(symbol, target)

    @staticmethod
    def _thread_functions(library):
        for set_name, get_name in _THREAD_NAMES:
            if _address(library, set_name) and _address(library, get_name):
                set_, get = getattr(library, set_name), getattr(library, get_name)
                set_.argtypes, set_.restype = [ctypes.c_int], None
                get.argtypes, get.restype = [], ctypes.c_int
                return set_, get
        return None


_binding = _Binding()
ENABLED = False
"""Whether kernels call BLAS themselves; else kernels.cpu.dense calls np.matmul."""

WIDE_INTS = True
"""Whether the bound BLAS takes 64-bit sizes; if not, check :func:`fits` before a call."""


def bind(paths=None, large=None):
    """Bind the kernels' GEMMs to the first of ``paths`` (default: the loaded BLAS
    libraries, NumPy's first) that exports one, and those of at least
    :data:`LARGE_GEMM_WORK` multiply-adds to the library at path ``large`` where it
    exports one. Done on import, ``large`` being MKL where kernels.cpu.mkl chooses it;
    calling it again affects only kernels not yet compiled or loaded in this process
    (tests use it in a fresh process)."""
    global ENABLED, WIDE_INTS
    ENABLED = _binding.bind(loaded_libraries() if paths is None else paths, large)
    WIDE_INTS = _binding.wide
    return ENABLED


bind(large=usable_library())


def library():
    """Path of the BLAS library the kernels call (None: none was found)."""
    return _binding.path


def gemm_library():
    """"MKL" where the large GEMMs go to MKL (kernels.cpu.mkl), else "NumPy" (the BLAS
    NumPy loaded, called directly); another library by its file's stem."""
    large = large_library()
    if large in (None, library()):
        return "NumPy"
    stem = os.path.basename(large)
    return "MKL" if "mkl" in stem.lower() else stem.split(".")[0]


def gemm_symbols():
    """The (float32, float64) gemm symbols of :func:`library` the kernels call, or None."""
    return _binding.gemm_names


def large_library():
    """Path of the BLAS library of GEMMs of at least :data:`LARGE_GEMM_WORK`
    multiply-adds (the same as :func:`library` unless MKL is used)."""
    return _binding.large_path


def large_gemm_symbols():
    """The (float32, float64) gemm symbols of :func:`large_library`, or None."""
    return _binding.large_names


def fits(*arrays):
    """Whether every size and stride of ``arrays`` (None: skipped) fits an LP64 BLAS's
    32-bit ints."""
    return all(max(a.shape, default=0) <= INT32_MAX and max(map(abs, a.strides), default=0) <= INT32_MAX
               for a in arrays if a is not None)


def set_blas_threads(n):
    """Set the thread count of each BLAS library bound; False where none offers a way to."""
    for set_, _ in _binding._threads:
        set_(int(n))
    return bool(_binding._threads)


def blas_threads():
    """The thread count of the library of large GEMMs, or None when unknown."""
    return _binding._threads[0][1]() if _binding._threads else None


# ------------------------------------------------------------------ compiled GEMM
def _call_gemm(order, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    """``c = a @ b`` by the bound BLAS (a typing stub: see the overload below)."""
    raise NotImplementedError("only callable from compiled code")


@overload(_call_gemm)
def _call_gemm_typed(order, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    real = c.dtype
    if real not in _GEMMS:
        return None
    small, large = _GEMMS[real]
    one, zero, enum = as_dtype(real).type(1.0), as_dtype(real).type(0.0), np.int32

    def impl(order, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
        if m * n * k >= LARGE_GEMM_WORK:
            large(enum(order), enum(trans_a), enum(trans_b), m, n, k, one, a.ctypes, lda,
                  b.ctypes, ldb, zero, c.ctypes, ldc)
        else:
            small(enum(order), enum(trans_a), enum(trans_b), m, n, k, one, a.ctypes, lda,
                  b.ctypes, ldb, zero, c.ctypes, ldc)
    return impl


@scalar
def _orientation(A):
    """(row major, leading dimension) of a 2-D array as BLAS sees it: leading dimension 0
    when its strides fit neither order (negative, zero or element strides: copy it).

    A dimension of 1 puts no constraint on its stride, whatever numpy left there.
    """
    rows, cols = A.shape
    item = A.itemsize
    row_stride, col_stride = A.strides
    if cols <= 1 or col_stride == item:
        ld = row_stride // item if rows > 1 else cols
        if ld >= max(1, cols) and (rows <= 1 or row_stride % item == 0):
            return True, ld
    if rows <= 1 or row_stride == item:
        ld = col_stride // item if cols > 1 else rows
        if ld >= max(1, rows) and (cols <= 1 or col_stride % item == 0):
            return False, ld
    return True, 0


@scalar
def _overlap(A, C):
    """Whether the memory spans of A and C intersect (BLAS must not read what it writes)."""
    a0, c0 = A.ctypes.data, C.ctypes.data
    a1 = a0 + (A.shape[0] - 1) * A.strides[0] + (A.shape[1] - 1) * A.strides[1] + A.itemsize
    c1 = c0 + (C.shape[0] - 1) * C.strides[0] + (C.shape[1] - 1) * C.strides[1] + C.itemsize
    return min(a0, a1) < max(c0, c1) and min(c0, c1) < max(a0, a1)


@scalar
def _usable(A, C):
    """Whether A can be handed to BLAS as it is when C is the output."""
    return _orientation(A)[1] > 0 and not _overlap(A, C)


@scalar
def ready(A, B, C):
    """Whether :func:`gemm_ready` can compute ``C = A @ B`` on these arrays as they are:
    strides BLAS takes, inputs apart from C, and a sum that is not empty."""
    return A.shape[1] > 0 and _usable(A, C) and _usable(B, C) and _orientation(C)[1] > 0


@composite
def gemm_ready(A, B, C):
    """``C = A @ B`` where :func:`ready` holds: what kernels call (the code they link in
    stays this small; :func:`gemm` handles the rest).

    BLAS takes each matrix as row or column major with a leading dimension: the order of
    the call is C's, and an operand stored the other way is passed transposed.
    """
    m, k = A.shape
    n = B.shape[1]
    c_rows, ldc = _orientation(C)
    a_rows, lda = _orientation(A)
    b_rows, ldb = _orientation(B)
    trans_a = NO_TRANS if a_rows == c_rows else TRANS
    trans_b = NO_TRANS if b_rows == c_rows else TRANS
    _call_gemm(ROW_MAJOR if c_rows else COL_MAJOR, trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc)


@composite
def gemm(A, B, C):
    """``C = A @ B`` (2-D, one float dtype) by the bound BLAS, as np.matmul computes it:
    any strides, no work for an empty C, zeros for an empty sum.

    Operands BLAS cannot take as they are (strides it has no parameter for, or memory
    it would read while writing C) are copied first; an output it cannot take is
    computed into a scratch and copied in. Runs a GEMM only where :data:`ENABLED`.
    """
    if C.size == 0:
        return
    if A.shape[1] == 0:
        C[:] = 0
        return
    a = A if _usable(A, C) else A.copy()
    b = B if _usable(B, C) else B.copy()
    direct = _orientation(C)[1] > 0
    c = C if direct else np.empty(C.shape, C.dtype)
    gemm_ready(a, b, c)
    if not direct:
        C[:] = c


def matmul(a, b, out):
    """``out = a @ b`` from Python: by :func:`gemm` where BLAS is bound (and, LP64, the
    sizes fit its ints), else by np.matmul, NumPy's own BLAS."""
    if ENABLED and (WIDE_INTS or fits(a, b, out)):
        gemm(a, b, out)
    else:
        np.matmul(a, b, out=out)
