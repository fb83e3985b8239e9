"""What the suite's modules share: the backends they run on, how a benchmark steps aside
where one cannot run, and how many calls make one sample.

The workloads and cases themselves are engine.bench's (one definition for
``python -m engine bench`` and this suite), imported where they are used.
"""
import time

import engine
from engine.bench import timing

# The fast backends, listed rather than probed: a benchmark's parameters must not depend
# on the machine that lists them (a GPU machine's results and a CPU one's share one
# history); setup skips where a backend cannot run.
BACKENDS = ["numba", "cupy"]

# Seconds one sample of a time_ benchmark lasts (asv's own default sample_time).
SAMPLE_SECONDS = 0.01


def require(backend, available=None):
    """Raise NotImplementedError, which asv reports as skipped (n/a), unless ``backend``
    is among ``available``: engine.available_backends(), probed here unless a
    setup_cache probed it once for the whole class."""
    if available is None:
        available = engine.available_backends()
    if backend not in available:
        raise NotImplementedError(f"backend {backend!r} cannot run here; available: {', '.join(available)}")


def synchronizer(backend):
    """What waits for the work an op queued: CuPy's current stream on ``cupy`` (its ops
    return before the device is done); None on the CPU, whose ops return when done."""
    if backend != "cupy":
        return None
    import cupy
    return cupy.cuda.get_current_stream().synchronize


def calls_per_sample(fn):
    """Calls of ``fn`` that fill one sample of about SAMPLE_SECONDS: one where a call
    lasts that long, else as many as the fastest of three calls says.

    A setup sets its benchmark's ``number`` from this. asv_runner (0.3 on) re-runs setup
    before every timed call of a benchmark that has one, and with ``number`` left to it,
    times a single call per sample: a few microseconds under the clock's and the
    interpreter's noise. With ``number`` set it times that many calls per sample (each on
    its own, setup in between; our setups return their memoised state, so in between
    costs nothing)."""
    first = _seconds(fn)
    if first >= SAMPLE_SECONDS:  # a step of L: no more calls spent on counting
        return 1
    fastest = min(first, *(_seconds(fn) for _ in range(2)))
    return timing.inner_calls(fastest, SAMPLE_SECONDS)


def _seconds(fn):
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def _initialise_numba():
    """Import the CPU backend and compile a trivial function, once, where the suite is
    imported. With asv.conf.json's launch_method "forkserver", asv forks every
    benchmark's process from a server that imported the suite: each then inherits
    numba's typing and target contexts rather than building them again (0.7 s of CPU a
    process, and some 150 processes use numba in a run; with asv's default "spawn" each
    started an interpreter and imported everything besides, and the quick run took 9
    minutes rather than 3). Nothing runs in parallel here, so no thread pool exists to be
    lost in the fork: numba's and the BLAS's start in the benchmarks' own processes.
    CuPy is left alone: CUDA initialised before a fork is unusable after it."""
    try:
        engine.backend.module("numba")
    except engine.BackendUnavailable:
        return  # its benchmarks skip
    import numba
    numba.njit(lambda: 0)()


_initialise_numba()
