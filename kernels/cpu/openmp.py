"""Another library's OpenMP runtime, loaded before this backend: which one it is, and
whether its threads spin. Imports neither NumPy nor numba: kernels.cpu asks before numba
loads its own.

Why: kernels.cpu sets the OpenMP environment (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``)
before numba loads GNU OpenMP, because libgomp reads it once, when it loads. A library
imported earlier may have loaded libgomp already, and then that copy is the one numba's
``omp`` layer and MKL's GNU layer run on, with the settings it read then.

PyTorch does (wheels for Linux, 2.x): ``import torch`` loads its own ``torch/lib/libgomp.so.1``
into the global symbol scope (``libtorch_global_deps`` is opened ``RTLD_GLOBAL``). Numba's
``omppool`` then still maps the system's ``libgomp.so.1.0.0`` (its ``DT_NEEDED`` names that
file), but every ``GOMP_*`` symbol binds to torch's copy, found first in the global scope
(``LD_DEBUG=bindings``); so do ``libmkl_gnu_thread``'s, and torch's ops. One pool, as
without torch, but its threads spin for libgomp's default when neither variable is set:
300000 spins, some 3 ms, after every parallel region. With MKL that is the same pool
spinning a little longer (harmless); with NumPy's OpenBLAS, whose pool is another one,
numba's spinning threads take the cores OpenBLAS's threads need. Imported after this
backend, torch finds the system libgomp loaded (same soname) and runs on it, with our
settings.

So where a spinning libgomp is there first and the GEMMs run on OpenBLAS, kernels.cpu
gives numba its ``workqueue`` layer (threads that sleep: 145 us a wake-up against 76 us)
instead of the spinning pool. An exported ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is
taken to be what that libgomp read, and left to work.

Measured on M (784-512-512-10, batch 128, AdamW, float32), 2 shared cores under other
load, each case in fresh processes, interleaved; the best 20-step mean of 3-4 processes
(medians drowned in the machine's load), in ms:

======================  ========  ===========  ==================  ==============
GEMMs                   no torch  torch first  torch first, fixed  torch after us
======================  ========  ===========  ==================  ==============
NumPy's OpenBLAS        3.4-4.7   8.8-10.2     3.3-3.9             3.3
MKL (one libgomp pool)  3.4-3.5   3.2-3.5      (unchanged)         3.7
======================  ========  ===========  ==================  ==============

Not handled: Intel's (libiomp5) or LLVM's (libomp) runtime keeps a pool of its own,
whose threads spin ``KMP_BLOCKTIME`` (200 ms) after that library's own parallel work.
"""
import ctypes
import os

GNU_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
"""What libgomp reads to decide how long a waiting thread spins; neither set: 300000 spins."""

_PROBE_SYMBOL = b"GOMP_parallel"


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def global_gnu_runtime():
    """Path of the libgomp whose ``GOMP_*`` symbols are in the global scope (so every
    library loaded later binds to it), or None. Also None where the C library offers no
    ``dladdr`` (not glibc)."""
    try:
        process = ctypes.CDLL(None)
        dladdr = process.dladdr
    except (OSError, AttributeError):
        return None
    try:
        address = ctypes.cast(getattr(process, _PROBE_SYMBOL.decode()), ctypes.c_void_p).value
    except AttributeError:
        return None  # no libgomp in the global scope
    info = _DlInfo()
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.realpath(os.fsdecode(info.dli_fname))


def preloaded_gnu_spins():
    """Whether a libgomp already in the global scope (:func:`global_gnu_runtime`) read an
    environment that sets neither of :data:`GNU_WAIT_VARIABLES`, so its threads spin some
    3 ms after each parallel region. Call it before setting them: it trusts a value in
    ``os.environ`` to have been there when that libgomp loaded."""
    return global_gnu_runtime() is not None and not any(v in os.environ for v in GNU_WAIT_VARIABLES)
