"""MKL from its wheel (``pip install "fusedense[mkl]"``): where it is, whether to use it,
and the threading it needs. Imports neither NumPy nor numba: kernels.cpu asks before
either loads its threads.

Why: on the Intel 2-core machines we measured first, MKL's sgemm was 1.1-1.35x faster
than NumPy's OpenBLAS on the layers of the M and L workloads, which is what a training
step's time is made of. On small GEMMs (under :data:`LARGE_GEMM_WORK` multiply-adds) it
is slower (6-10 us against 3-7 us), so those stay on NumPy's BLAS (:mod:`kernels.cpu.blas`
binds both). On an AMD EPYC (2 cores, 2026-11) it is the other way round: the GEMMs of
a step on one thread took 8.9 ms (M) and 1485 ms (L) of CPU on OpenBLAS against 10.6 and
1797 on MKL, a whole L step on two threads 220 ms against 265 (benchmarks/step_profile.py),
and MKL's threads made the small models slower at two threads than at one (the digits
demo's step 204-251 us against 176-194; OpenBLAS 175-207 either way). So ``auto`` takes
MKL on Intel processors only (:func:`intel_processor`).

Threads: MKL runs on the GNU OpenMP layer (``MKL_THREADING_LAYER=GNU``), that is on the
very libgomp thread pool numba's ``omp`` layer uses: one pool of as many threads as
cores, so a thread that waits for the next parallel region can spin without taking a
core from another pool. They spin briefly (``GOMP_SPINCOUNT``) and then sleep, so the
short gaps between a step's GEMMs and fused passes cost no wake-up (76 us each when
they sleep at once) and an idle process does not keep a core busy. Measured on M: 1.9-2.0
ms a step this way, 2.9 ms with MKL's threads sleeping at once, 22-24 ms with MKL's Intel
OpenMP beside numba's pool.

``ENGINE_BLAS`` chooses: ``auto`` (default: MKL where installed and the processor is
Intel's), ``mkl`` (an ImportError where it is not installed), ``numpy`` (NumPy's own BLAS
only).
"""
import ctypes
import importlib.metadata
import os

CHOICES = ("auto", "mkl", "numpy")

LARGE_GEMM_WORK = 1 << 18
"""Multiply-adds (m n k) from which a GEMM goes to MKL rather than to NumPy's BLAS."""

SPIN_COUNT = "10000"
"""libgomp's spins before a waiting thread sleeps: some 0.2-0.5 ms here. The same step
took 1.96 ms at 10^4 spins, 1.91 at 10^5, 2.09 at 10^6 (where spinning threads start to
slow NumPy's own OpenBLAS calls in between)."""


def installed_library():
    """Path of the wheel's ``libmkl_rt``, or None where the ``mkl`` distribution is not
    installed (or ships no such file)."""
    try:
        files = importlib.metadata.distribution("mkl").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if os.path.basename(str(file)).startswith("libmkl_rt.so"):
            path = os.path.realpath(file.locate())
            if os.path.exists(path):
                return path
    return None


def _choice():
    choice = os.environ.get("ENGINE_BLAS", "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"ENGINE_BLAS must be one of {', '.join(CHOICES)}; got {choice!r}")
    return choice


def chosen_library():
    """The MKL library the kernels are to call, or None (NumPy's BLAS alone), as
    ``ENGINE_BLAS`` says."""
    choice = _choice()
    if choice == "numpy" or (choice == "auto" and not intel_processor()):
        return None
    path = installed_library()
    if path is None and choice == "mkl":
        raise ImportError('ENGINE_BLAS=mkl but MKL is not installed: pip install "fusedense[mkl]"')
    return path


def intel_processor(cpuinfo="/proc/cpuinfo"):
    """Whether the processor is Intel's (``vendor_id`` GenuineIntel), the one MKL's GEMMs
    are fastest on; False where it cannot be told (no /proc/cpuinfo)."""
    try:
        with open(cpuinfo) as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip() == "GenuineIntel"
    except OSError:
        pass
    return False


def usable_library():
    """:func:`chosen_library` where GNU OpenMP (libgomp) loads, which MKL's GNU layer
    needs and slim images may lack (numba then falls back to its workqueue layer). Call
    it after :func:`prepare_threads`: libgomp reads its environment when it loads."""
    path = chosen_library()
    if path is None or _gnu_openmp_loads():
        return path
    if _choice() == "mkl":
        raise ImportError("ENGINE_BLAS=mkl needs GNU OpenMP (libgomp.so.1), which does not load "
                          "here: install your system's libgomp1")
    return None


def _gnu_openmp_loads():
    try:
        ctypes.CDLL("libgomp.so.1")
    except OSError:
        return False
    return True


def prepare_threads():
    """The environment MKL and libgomp read when they load (a value already set wins)."""
    os.environ.setdefault("MKL_THREADING_LAYER", "GNU")
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
