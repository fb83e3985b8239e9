"""The Numba CPU backend: every op of :mod:`kernels.spec`, compiled and fused.

Importing it raises ImportError where numba is missing. Kernels compile on first use
(per dtype and array layout, and per activation code, aliasing or optimizer where that
lets the loops specialise) and are cached on disk, so later processes load them; see
:mod:`kernels.cpu.jit` for the options every kernel shares.

Threads. A GEMM runs on the BLAS's threads and the fused passes around it on numba's;
with as many threads as cores, whichever pool is idle must not spin, or the other waits
for cores (measured here: a step 14x slower). What this module can do, it does before
numba starts its threads; all of it by ``os.environ.setdefault`` or only where the user
chose nothing, so an exported value wins:

* numba's threading layer is OpenMP when available (``workqueue`` otherwise).
* With MKL installed on an Intel processor (``pip install "fusedense[mkl]"``, see
  :mod:`kernels.cpu.mkl`), the
  large GEMMs run on MKL's GNU OpenMP layer: the same libgomp pool as numba's, whose
  threads spin briefly between regions (``GOMP_SPINCOUNT``), as one pool can.
* Otherwise NumPy's OpenBLAS has a pool of its own, and ``OMP_WAIT_POLICY=PASSIVE`` puts
  numba's threads to sleep after each parallel region. libgomp reads these when first
  loaded, which is when numba loads it, unless another library loaded libgomp earlier.
  PyTorch does; then, without MKL, numba gets its ``workqueue`` layer instead
  (:mod:`kernels.cpu.openmp`).
* ``OPENBLAS_THREAD_TIMEOUT=4`` (2^4 cycles, OpenBLAS's minimum, against a default of
  2^28) is set only if NumPy, and so OpenBLAS, is not loaded yet; otherwise it would do
  nothing.
* Sleeping threads cost a wake-up per parallel region: 76 us here with PASSIVE (1.5 us
  with spinning threads, 145 us with workqueue). Ops on fewer elements than
  ``jit.PARALLEL_MIN_WORK`` therefore run the serial compilation of their kernel, on the
  calling thread alone (:func:`kernels.cpu.jit.serial_and_parallel`).

:func:`set_num_threads` sets numba's threads and the BLAS's (each library the kernels
call, :mod:`kernels.cpu.blas`) together.
"""
import os
import sys

_MIN_NUMBA = (0, 59)

from . import mkl, openmp  # noqa: E402  (import neither NumPy nor numba)

# Asked before we set the variables it looks for: a libgomp loaded earlier (by torch)
# has read its environment already.
_SPINNING_OPENMP_FIRST = openmp.preloaded_gnu_spins()
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
if mkl.chosen_library():
    mkl.prepare_threads()
elif "numba.np.ufunc.omppool" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    import numba
except ImportError as error:  # the package cannot work without it
    raise ImportError(f"kernels.cpu needs numba: {error}") from error


def _choose_threading_layer():
    if numba.config.THREADING_LAYER != "default":
        return  # the user's choice (NUMBA_THREADING_LAYER)
    if _SPINNING_OPENMP_FIRST and not mkl.chosen_library():
        # Its spinning threads would take the cores OpenBLAS's need (kernels.cpu.openmp).
        numba.config.THREADING_LAYER = "workqueue"
        return
    try:
        from numba.np.ufunc import omppool  # noqa: F401  (loads libgomp)
        numba.config.THREADING_LAYER = "omp"
    except ImportError:
        numba.config.THREADING_LAYER = "workqueue"


_choose_threading_layer()

from . import blas  # noqa: E402
from .blas import blas_threads, matmul, set_blas_threads  # noqa: E402
from .arrays import capture, copy_into, empty, take_rows, to_device, to_host, zeros  # noqa: E402
from .augment import gaussian_noise, mix_class_targets, mix_rows  # noqa: E402
from .constraints import max_norm  # noqa: E402
from .decisions import guard_update, metric_sums  # noqa: E402
from .dense import apply_output, dense_backward, dense_forward, dropout_mask  # noqa: E402
from .losses import binary_cross_entropy, huber, mse, softmax_cross_entropy  # noqa: E402
from .norm import norm_backward, norm_forward  # noqa: E402
from .optim import adadelta, adagrad, adam, all_finite, grad_sq_norms, nadam, rmsprop, sgd  # noqa: E402

name = "numba"
gemm_library = blas.gemm_library()


def unavailable_reason():
    """None when this backend can run here, else why not (the test fixtures skip on it)."""
    version = tuple(int(part) for part in numba.__version__.split(".")[:2])
    if version < _MIN_NUMBA:
        return f"numba {numba.__version__} is older than {'.'.join(map(str, _MIN_NUMBA))}"
    return None


def set_num_threads(n):
    """Threads of numba's parallel kernels (at most NUMBA_NUM_THREADS) and of the BLAS
    (where its library lets us: see :func:`blas_threads`)."""
    numba.set_num_threads(n)
    set_blas_threads(n)


def get_num_threads():
    """Threads of numba's parallel kernels (:func:`blas_threads` gives the BLAS's)."""
    return numba.get_num_threads()
