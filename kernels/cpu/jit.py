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
  of vecmath depends on exact rounding. They say so (``fastmath=False``): numba compiles a
  function that sets no fastmath of its own with the flags of the kernel calling it.
"""
import functools
import hashlib
import os
from pathlib import Path

import numba
from numba import njit, prange
from numba.core.cpu import CPUTargetOptions

def _drop_stale_cache(package=Path(__file__).parent):
    """Delete the numba cache files of kernels/cpu (``package``) when the sources differ
    from those that wrote them (their digest is kept beside them).

    Processes starting together (pytest-xdist's workers, MPI ranks after an upgrade) do
    this one at a time, under an exclusive lock on ``numba-sources.lock``: the first
    deletes and writes the new digest, the others then find it and delete nothing. Without
    the lock a later one deleted what the first had begun to save, the lock files of
    :func:`_serialize_cache_saves` among it, and a lock file deleted while held no longer
    excludes anyone (the next process locks a new file of that name), and the saves could
    race again. So the lock files are never deleted (a few empty files).

    Only the default location, ``__pycache__`` beside the sources, is handled: with
    NUMBA_CACHE_DIR set, or a read-only install (numba then caches per user), stale
    entries remain possible after editing a helper module.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    sources = sorted(package.glob("*.py")) + [package.parent / "spec.py", package.parent / "rng.py"]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    cache = package / "__pycache__"
    stamp = cache / "numba-sources.sha256"
    try:
        cache.mkdir(exist_ok=True)
        lock = open(cache / "numba-sources.lock", "a")
    except OSError:  # read-only: numba will cache elsewhere
        return
    with lock:  # closing the file releases the lock
        _lock_exclusively(lock)
        try:
            if stamp.read_text() == digest:
                return
        except OSError:
            pass
        try:
            # kernels.cpu.steps' generated steps and their compiled code (which links kernels)
            for path in [*cache.glob("*.nb[ic]"), *cache.glob("steps/*.py"), *cache.glob("steps/__pycache__/*.nb[ic]")]:
                path.unlink(missing_ok=True)
            stamp.write_text(digest)
        except OSError:
            pass


def _lock_exclusively(file):
    """An exclusive POSIX lock on the open ``file`` until it is closed (none without fcntl)."""
    try:
        import fcntl
    except ImportError:
        return
    fcntl.flock(file, fcntl.LOCK_EX)


def _serialize_cache_saves():
    """Make numba save compiled code to its disk cache one process at a time.

    numba keeps every overload of one function (its signatures, and the closures one
    ``def`` makes: both kernels of :func:`serial_and_parallel`, each optimizer's update)
    in one index file, each overload's code in a data file numbered by it. A save reads
    the index, takes the first free number, writes the index, then the data, with no
    lock: two processes that compile overloads of one function at once (pytest-xdist's
    workers, MPI ranks on an empty cache) can take the same number, and the data file
    then holds one process's code while the index may name it for the other's overload.
    Every later process may then load that wrong code, or miss an overload the index lost
    (tests/test_kernels_cpu_cache.py shows the second; numba issue 4807 is the same race).
    (Wrong diagnostics of the parallel SGD and Adam updates after test runs, first put
    down to this race, came from a numba miscompile: see kernels.cpu.optim's update
    kernels.) Here each save holds an exclusive
    lock (POSIX ``flock``) on a file beside the index, so the second process reads the
    index the first wrote. Without fcntl the saves are not locked; with a numba that saves
    otherwise they stay as numba makes them.
    """
    try:
        from numba.core.caching import IndexDataCacheFile
    except ImportError:
        return
    unlocked = getattr(IndexDataCacheFile, "save", None)
    if unlocked is None or getattr(unlocked, "serialized", False):
        return

    @functools.wraps(unlocked)
    def save(self, key, data):
        index = getattr(self, "_index_path", None)
        try:
            lock = open(f"{index}.lock", "a") if index else None
        except OSError:  # numba's own writes will say what is wrong with the directory
            lock = None
        if lock is None:
            return unlocked(self, key, data)
        with lock:  # closing the file releases the lock
            _lock_exclusively(lock)
            return unlocked(self, key, data)

    save.serialized = True
    IndexDataCacheFile.save = save


_drop_stale_cache()
_serialize_cache_saves()

FASTMATH = frozenset({"contract", "arcp", "reassoc"})

scalar = functools.partial(njit, cache=True, error_model="numpy", fastmath=False)
"""A scalar helper, compiled once per argument types and inlined by LLVM into kernels."""

inline = functools.partial(njit, inline="always", error_model="numpy")
"""A helper inlined by numba into its caller, whose constant arguments then fold."""

row_loop = functools.partial(njit, cache=True, fastmath=set(FASTMATH), error_model="numpy",
                             forceinline=True)
"""A serial loop over one row or block, called from kernels and always inlined there by LLVM.

Always, not at LLVM's discretion: a helper left as a call runs whichever of its two copies
the JIT loaded first, its own compilation or the copy linked into the kernel and optimized
again there, and under 'contract' the two may fuse different multiply-adds. A fresh process
ran the first, one loading the kernel from the disk cache the second: AdamW's updates
differed in the last bits (tests/test_kernels_cpu_cache.py)."""

composite = functools.partial(njit, cache=True, error_model="numpy")
"""Compiled control flow around calls, no loops to speed up (the BLAS GEMM's setup)."""

# Serial kernels run without numba's reference counting (NRT) where numba allows it:
# with it, every array argument is given a fresh MemInfo on the way in (some 60 ns
# each, 0.5 us for an op of 9 arrays) and every row view taken in a loop is counted
# with atomic increments (20-30 ns a row: a softmax-CE of 1024 x 10 took 68 us, 47 us
# without). Serial kernels allocate nothing, which is all NRT is needed for; functions
# they call count references of a null MemInfo, which NRT skips.
_SERIAL_OPTIONS = {"_nrt": False} if hasattr(CPUTargetOptions, "_nrt") else {}

small_kernel = functools.partial(njit, cache=True, error_model="numpy", fastmath=False, **_SERIAL_OPTIONS)
"""A serial kernel of little work (a few segments, one pass over a batch's logits): no
thread pool to wake, no reference counting (so it must not allocate), and no fastmath,
so that it rounds as the reference does."""


def _parallel_kernel(function):
    """``function`` compiled with its ``prange`` loops, and only those, in parallel.

    numba's other automatic parallelisations are off: each would turn a slice assignment
    or a NumPy call into a parallel region of its own. (A new dict each time: numba
    empties the one it is given.)
    """
    parallel = dict.fromkeys(("comprehension", "reduction", "inplace_binop", "setitem", "numpy",
                              "stencil", "fusion"), False)
    return njit(function, parallel=parallel, cache=True, fastmath=set(FASTMATH),
                error_model="numpy")


def serial_and_parallel(build):
    """``(serial, parallel)``: one kernel, written once, compiled two ways.

    ``build(loop)`` returns the kernel's Python function, whose parallel loop iterates
    over ``loop(...)`` (and which may test ``loop is prange``, a compile-time constant).
    ``serial`` is compiled with ``range``: a plain loop, no thread pool, no reference
    counting (see _SERIAL_OPTIONS), so it must not allocate. ``parallel`` with numba's
    ``prange``, on its threads. Callers pick by work, ``pair[work >= PARALLEL_MIN_WORK]``:
    a comparison in Python, where toggling numba's thread count around a kernel cost
    2-3 us and a parfor even on one thread 0.6 us. Each compiles on its first call, so
    a process that only runs small work never compiles the parallel one (parfors are the
    costly part to compile); the two never share a disk-cache entry (their closures
    differ in ``loop``).

    (One kernel branching on the size between a serial loop and a prange loop, both
    calling the loop body, costs no Python but compiled 35-60% slower: numba compiles
    the body twice, whether inlined or linked.)
    """
    # The serial kernel is an entry point: forced inlining would only copy it into its wrappers.
    return (row_loop(build(range), forceinline=False, **_SERIAL_OPTIONS), _parallel_kernel(build(prange)))


PARALLEL_MIN_WORK = 1 << 17
"""Elements below which a kernel runs serially (see :func:`serial_and_parallel`).

Waking numba's sleeping OpenMP threads (OMP_WAIT_POLICY=PASSIVE, see kernels.cpu) cost
76 us per parallel region on this 2-core VM, against under 1 us on one thread; a
memory-bound pass takes about 0.3-1 ns per element on one core, so two threads pay off
only beyond some 10^5 elements. With the briefly spinning pool of the MKL set-up the
wake-up is 1.5 us, but 2^14 measured no faster on M than this (2.08 ms a step both)."""

try:
    # The thread count as parfors read it: by symbol name, so kernels stay cacheable
    # (numba.get_num_threads in a kernel embeds an address and is never cached). Only
    # parallel kernels may call it: loading one from the cache registers the symbol.
    from numba.np.ufunc.parallel import _iget_num_threads as thread_count
except ImportError:  # a numba without it: size parallel work for the default pool
    _DEFAULT_THREADS = numba.config.NUMBA_NUM_THREADS

    @njit
    def thread_count():
        return _DEFAULT_THREADS


@scalar
def column_width(m):
    """Columns per block of a parallel column reduction: whole 64-byte lines, and about
    four blocks per thread for balance. Each block owns its output columns, so no
    thread-private partial sums are needed, and the result does not depend on it.
    (Only parallel kernels may call it: see thread_count.)"""
    per_block = -(-m // (4 * thread_count()))
    return max(64, -(-per_block // 16) * 16)
