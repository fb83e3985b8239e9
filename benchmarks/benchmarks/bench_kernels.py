"""The backend interface's ops alone (kernels.spec.Backend): the time and the peak memory
of every op at the workload sizes S, M and L on each fast backend, and the memory-bound
kernels' bandwidth as a share of the memory roof measured beside them.

The ops, their inputs and their sizes are engine.bench.cases' (one case per op of the
spec): adding an op to kernels.spec adds its benchmarks here. A case whose kernel
disagrees with the NumPy reference is never timed.
"""
import functools
import statistics

import engine
from engine.bench import cases, floors, timing, worker
from engine.bench.workloads import WORKLOADS

from .common import BACKENDS, calls_per_sample, require, synchronizer


def _check_every_case():
    """Every case on every available fast backend against the reference: the backends
    available, and {(op, workload, backend): None where the case agrees, else why not}.
    An error is kept rather than raised, so that one bad op fails its own benchmarks only."""
    available = engine.available_backends()
    verdicts = {}
    for backend in (b for b in BACKENDS if b in available):
        for workload in WORKLOADS:
            for op in cases.OPS:
                try:
                    cases.case(op, backend, workload).check()
                    verdicts[op, workload, backend] = None
                except Exception as error:  # noqa: BLE001  (a mismatch, or a kernel that raised)
                    verdicts[op, workload, backend] = f"{type(error).__name__}: {error}"
    return {"available": available, "verdicts": verdicts}


@functools.cache
def _prepared(op, workload, backend):
    """(case, one synchronised call). The first call is made here: numba compiles the
    kernel or loads it from its disk cache, CuPy loads its module. Memoised: asv re-runs
    setup around every timed call (see common.calls_per_sample)."""
    case = cases.case(op, backend, workload)
    sync = synchronizer(backend)
    if sync is None:
        call = case.call
    else:
        def call():
            case.call()
            sync()
    call()
    return case, call


@functools.cache
def _calls_per_sample(op, workload, backend):
    return calls_per_sample(_prepared(op, workload, backend)[1])


class Ops:
    """``time_op`` and ``peakmem_op``: one op at one workload's sizes on one backend.

    The reference check runs once for the class, in setup_cache, before any op is timed;
    setup refuses to time a case that failed it. It runs there rather than in setup for
    two reasons. peakmem_ reports the process's peak RSS, setup included: the check holds
    a second set of inputs and the reference's outputs (some 0.8 GB for an optimizer at
    L) and would hide whatever the op itself allocates. And the check of an L case takes
    seconds on the reference: once per run, rather than once in each benchmark's
    process. setup_cache also probes the backends once, so that each of the many cupy
    cases skips without importing CuPy.

    peakmem_op is the host's memory only (on cupy, what CuPy keeps on the host); at S it
    is the process's own (the interpreter, numba, LLVM: some 100 MB), the inputs being
    under 1 MB.
    """

    params = (cases.OPS, list(WORKLOADS), BACKENDS)
    param_names = ("op", "workload", "backend")
    timeout = 180  # an optimizer's case at L takes some 3 s to build on 2 cores

    def setup_cache(self):
        return _check_every_case()

    setup_cache.timeout = 1200  # every op at S, M and L: a minute or two on 2 cores

    def setup(self, checked, op, workload, backend):
        require(backend, checked["available"])
        key = (op, workload, backend)
        if key not in checked["verdicts"]:
            raise RuntimeError(f"{key} was not checked against the reference by setup_cache")
        if checked["verdicts"][key] is not None:
            raise cases.KernelMismatch(f"not timed: {checked['verdicts'][key]}")
        self.case, self.call = _prepared(op, workload, backend)
        self.number = _calls_per_sample(op, workload, backend)

    def time_op(self, checked, op, workload, backend):
        self.call()

    def peakmem_op(self, checked, op, workload, backend):
        self.case.call()


class MemoryBound:
    """Bandwidth of the memory-bound kernel rows of ``python -m engine bench``
    (engine.bench.worker.KERNEL_ROWS) as a share of the memory roof measured in the same
    process: a ratio that moves with the kernel, not with the machine's bandwidth. The
    roof is the better of a 256 MB copy and an in-place axpy on the CPU, the copy on a
    GPU (see engine.bench.floors).

    Roof and kernel are measured in turns, a sample of each per pair, and the result is
    the median of the pairs' shares: a burst of load from elsewhere (seconds, longer than
    either's samples together) then slows both sides of a pair or a minority of pairs,
    where measuring all of one and then all of the other would lower one side only."""

    params = ([label for label, _, _ in worker.KERNEL_ROWS], BACKENDS)
    param_names = ("kernel", "backend")
    unit = "share of memory roof"
    timeout = 300
    PAIRS = 5

    def setup(self, kernel, backend):
        require(backend)
        self.op, dims = {label: (op, dims) for label, op, dims in worker.KERNEL_ROWS}[kernel]
        self.case = cases.case(self.op, backend, dims=dims)
        self.case.check()

    def track_share_of_memory_roof(self, kernel, backend):
        time_calls = timing.timer(backend)
        shares = []
        for _ in range(self.PAIRS):
            roofs = [floors.copy_roof(backend, 1)]
            if backend != "cupy":
                roofs.append(floors.axpy_roof(backend, 1))
            roof = max(size / samples[0] for size, samples in roofs)
            seconds = time_calls(self.case.call, 1, worker.KERNEL_INNER[self.op])[0]
            shares.append(self.case.bytes / seconds / roof)
        return statistics.median(shares)
