"""The compilation options every kernel of this backend shares.

* ``cache=True``: compiled code is kept on disk beside the sources. Numba invalidates
  an entry when the file of the function itself changes, not when a helper it inlined
  from another module does; so :func:`_drop_stale_cache` empties this package's cache
  whenever any of its sources (or kernels/spec.py, kernels/rng.py) changed.
* ``error_model='numpy'``: division by zero gives inf or NaN as in NumPy (the reference)
  rather than raising, and leaves no exception branch to stop the loop vectoriser.
* ``fastmath`` for the loops: contraction to FMA, reciprocal, reassociation of sums
  (the vectorised reductions need it); never 'nnan' or 'ninf', since the trainer relies on
  NaN and inf reaching losses and gradients. Scalar helpers get no fastmath: the exp
  of vecmath depends on exact rounding (its callers' flags do not reach into it).
"""
import functools
import hashlib
import os
from pathlib import Path

import numba
from numba import njit
from numba.np.ufunc import parallel

def _drop_stale_cache():
    """Delete the numba cache files of kernels/cpu when the sources differ from those
    that wrote them (their digest is kept beside them).

    Only the default location, ``__pycache__`` beside the sources, is handled: with
    NUMBA_CACHE_DIR set, or a read-only install (numba then caches per user), stale
    entries remain possible after editing a helper module.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = Path(__file__).parent
    sources = sorted(here.glob("*.py")) + [here.parent / "spec.py", here.parent / "rng.py"]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    cache = here / "__pycache__"
    stamp = cache / "numba-sources.sha256"
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    try:
        for path in cache.glob("*.nb[ic]"):
            path.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        pass


_drop_stale_cache()

FASTMATH = frozenset({"contract", "arcp", "reassoc"})

scalar = functools.partial(njit, cache=True, error_model="numpy")
"""A scalar helper, compiled once per argument types and inlined by LLVM into kernels."""

inline = functools.partial(njit, inline="always", error_model="numpy")
"""A helper inlined by numba into its caller, whose constant arguments then fold."""

kernel = functools.partial(njit, parallel=True, cache=True, fastmath=set(FASTMATH),
                           error_model="numpy")
"""A parallel kernel (``prange`` loops)."""

row_loop = functools.partial(njit, cache=True, fastmath=set(FASTMATH), error_model="numpy")
"""A serial loop over one row or block, called from kernels (and inlined there by LLVM)."""

PARALLEL_MIN_WORK = 1 << 17
"""Elements below which a kernel runs on the calling thread alone.

Waking numba's sleeping OpenMP threads (OMP_WAIT_POLICY=PASSIVE, see kernels.cpu) cost
76 us per parallel region on this 2-core VM, against under 1 us on one thread; a
memory-bound pass takes about 0.3-1 ns per element on one core, so two threads pay off
only beyond some 10^5 elements. With spinning threads (ACTIVE) the wake-up is 1.5 us
and this could be some 10^4: the lead's thread planning owns the number."""


@functools.cache
def _thread_count_functions():
    """(get, set) of numba's thread count for this thread.

    The public functions validate and re-check the thread pool on every call (2 us for a
    set/restore pair); the ctypes entry points they end in, bound once the pool is up,
    take 0.6 us. Falls back to the public ones if a numba version renames them.
    """
    numba.get_num_threads()  # starts the pool, which binds the entry points
    get = getattr(parallel, "_get_num_threads", None)
    set_ = getattr(parallel, "_set_num_threads", None)
    if callable(get) and callable(set_):
        return get, set_
    return numba.get_num_threads, numba.set_num_threads


def launch(kernel, work, *args):
    """``kernel(*args)``, on one thread when ``work`` (elements) is below PARALLEL_MIN_WORK."""
    if work >= PARALLEL_MIN_WORK:
        return kernel(*args)
    get, set_ = _thread_count_functions()
    threads = get()
    if threads == 1:
        return kernel(*args)
    set_(1)
    try:
        return kernel(*args)
    finally:
        set_(threads)
