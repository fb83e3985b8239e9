"""One provider's measurements, in a process of its own: ``python -m engine.bench.worker``
reads a job (JSON) on stdin and prints its rows (JSON) on stdout.

A job names its ``kind`` (``fusedense``, ``torch``, ``jax`` or ``sklearn``), the
``workloads`` as [name, batch] pairs, ``reps``, and for fusedense the ``backend`` and
whether to time the memory-bound ``kernels`` and a ``fit`` epoch. A fusedense job times
its GEMM floors and memory roofs itself, so its ratios are of one process and one run;
the runner holds the peers' rows against them afterwards.
"""
from __future__ import annotations

import json
import statistics
import sys
from dataclasses import asdict

from .report import Row
from .workloads import N_BATCHES, WORKLOADS, step_flops

# Calls per sample at a workload's own batch size (fewer for larger batches): each
# sample lasts some 10-20 ms on a 2-core CPU.
INNER = {"S": 200, "M": 20, "L": 2}
NUMPY_FLOOR = "GEMM floor NumPy"  # through np.matmul: the floor every CPU provider is held to
# The peers' names in the rows (providers that are not fusedense backends).
TORCH_STEPS = {"torch eager": False, "torch fused": True}  # name: AdamW(fused=...)
TORCH_KERNELS, JAX, SKLEARN = "torch", "jax jit", "sklearn MLPClassifier"
PEERS = (*TORCH_STEPS, TORCH_KERNELS, JAX, SKLEARN)
EPOCH_WORKLOAD = "S"  # the peer scikit-learn is timed on (small tabular models)
# The workloads whose step is also timed as fit runs it, and the epochs of each sample:
# some 10 ms or more of fit on a 2-core CPU (L's step is its GEMMs: fit saves it nothing).
FIT_STEP_EPOCHS = {"S": 4, "M": 1}

# The memory-bound kernel rows: (label, op of kernels.spec, sizes).
KERNEL_ROWS = [
    ("AdamW 1M", "adam", {"n_params": 1 << 20}),
    ("AdamW 16M", "adam", {"n_params": 16 << 20}),
    ("softmax-CE 1024x10", "softmax_cross_entropy", {"batch": 1024, "classes": 10}),
    ("softmax-CE 1024x1000", "softmax_cross_entropy", {"batch": 1024, "classes": 1000}),
    ("softmax-CE 256x32000", "softmax_cross_entropy", {"batch": 256, "classes": 32000}),
    ("dropout mask 1024x4096", "dropout_mask", {"batch": 1024, "fan_out": 4096}),
]
KERNEL_INNER = {"adam": 5, "softmax_cross_entropy": 10, "dropout_mask": 5}


def times_epoch(workload, batch):
    """Whether a job times a ``fit`` epoch (fusedense) or ``partial_fit`` (scikit-learn)."""
    return workload == EPOCH_WORKLOAD and batch == WORKLOADS[workload][1]


def inner_calls(workload, batch):
    return max(1, INNER[workload] * WORKLOADS[workload][1] // batch)


def _median_ms(samples):
    return statistics.median(samples) * 1e3


def _device(backend):
    return "cuda" if backend == "cupy" else "cpu"


def fusedense_rows(job):
    from .. import backend as backend_module
    from . import floors, steps
    from .timing import host_timed, interleaved, timer

    backend, reps = job["backend"], job["reps"]
    k = backend_module.module(backend)
    rows = []
    for workload, batch in job["workloads"]:
        sizes, inner = WORKLOADS[workload][0], inner_calls(workload, batch)
        numpy_floor = own = None
        if job.get("numpy_floor"):
            rows.append(_floor_row("numpy", NUMPY_FLOOR, workload, batch, reps))
            numpy_floor = own = _median_ms(rows[-1].samples)
        if backend != "numpy":
            rows.append(_floor_row(backend, f"GEMM floor {backend} ({k.gemm_library})", workload, batch, reps))
            own = _median_ms(rows[-1].samples)
        # The compiled steps (engine.compiled_steps) beside the numba step op by op, what they save.
        paths = ((backend, True), (f"{backend} op by op", False)) if backend == "numba" else ((backend, True),)
        own_gemms = None if own is None else floors.gemm_call(backend, sizes, batch)

        def held_row(op, provider, time_calls, call, per_call, steps_per_call=1):
            """A row of ``call``'s samples, each over ``per_call`` calls of ``steps_per_call``
            steps, taken in turn with samples of the step's own GEMMs (timing.interleaved),
            to which each sample is held."""
            if own_gemms is None:
                samples, floor_samples = time_calls(call, reps, per_call), None
            else:
                samples, floor_samples = interleaved([(time_calls, call, per_call),
                                                      (timer(backend), own_gemms, inner)], reps)
            return Row(op, workload, provider, [seconds / steps_per_call for seconds in samples], batch,
                       step_flops(sizes, batch), device=_device(backend), floor_ms=own, floor_samples=floor_samples,
                       numpy_floor_ms=numpy_floor)

        def step_row(op, provider, normalization=None, compiled=True):
            """A training step checked against the reference, then timed against the floors."""
            steps.check_step(backend, sizes, batch, normalization, compiled)
            return held_row(op, provider, timer(backend),
                            steps.step_call(backend, sizes, batch, normalization, compiled), inner)

        rows += [step_row("train_step", provider, compiled=compiled) for provider, compiled in paths]
        if workload in FIT_STEP_EPOCHS and batch == WORKLOADS[workload][1]:  # the steps check_step checked
            epochs = FIT_STEP_EPOCHS[workload]
            rows += [held_row("fit_step", provider, host_timed, steps.fit_call(backend, sizes, batch, compiled, epochs),
                              1, epochs * N_BATCHES) for provider, compiled in paths]
        normalization = job.get("normalization")
        if normalization:  # the same model with its hidden layers normalized, against the same floor
            rows.append(step_row(f"train_step {normalization} norm", backend, normalization))
        if times_epoch(workload, batch):
            rows += [Row("epoch", workload, provider, steps.engine_epoch(backend, sizes, batch, reps, compiled), batch)
                     for provider, compiled in paths]
    if job.get("kernels"):
        rows += _kernel_rows(backend, reps)
    return rows


def _floor_row(backend, provider, workload, batch, reps):
    """The GEMM floor of a workload's step through ``backend``'s matmul."""
    from . import floors

    sizes = WORKLOADS[workload][0]
    samples = floors.gemm_floor(backend, sizes, batch, reps, inner_calls(workload, batch))
    return Row("gemm_floor", workload, provider, samples, batch, step_flops(sizes, batch), device=_device(backend))


def _kernel_rows(backend, reps):
    from . import cases, floors
    from .timing import timer

    device = _device(backend)
    roofs = [Row("roof", label, backend, samples, bytes=size, device=device)
             for label, (size, samples) in (("copy 256MB", floors.copy_roof(backend, reps)),
                                            ("axpy 256MB in place", floors.axpy_roof(backend, reps)))]
    # The copy on a GPU (it reaches the memory's bandwidth there), the better of the two
    # on a CPU (see engine.bench.floors).
    roof = roofs[0].median("GB/s") if backend == "cupy" else max(r.median("GB/s") for r in roofs)
    rows = roofs
    for label, op, dims in KERNEL_ROWS:
        case = cases.case(op, backend, dims=dims)
        case.check()
        rows.append(Row(op, label, backend, timer(backend)(case.call, reps, KERNEL_INNER[op]), bytes=case.bytes,
                        device=device))
    for row in rows:
        row.roof_gbps = roof
    return rows


def torch_rows(job):
    from . import cases, peers

    device = peers.torch_device(job.get("gpu", False))
    rows = []
    for workload, batch in job["workloads"]:
        sizes = WORKLOADS[workload][0]
        for provider, fused in TORCH_STEPS.items():
            samples = peers.torch_step(sizes, batch, job["reps"], inner_calls(workload, batch), fused, device)
            rows.append(Row("train_step", workload, provider, samples, batch, step_flops(sizes, batch), device=device))
    if job.get("kernels"):
        ops = {label: (op, dims) for label, op, dims in KERNEL_ROWS}
        for label, samples in peers.torch_kernels(KERNEL_ROWS, job["reps"], device):
            op, dims = ops[label]
            rows.append(Row(op, label, TORCH_KERNELS, samples, bytes=cases.inputs(op, dims=dims).bytes, device=device))
    return rows


def jax_rows(job):
    from . import peers

    rows = []
    for workload, batch in job["workloads"]:
        sizes = WORKLOADS[workload][0]
        samples = peers.jax_step(sizes, batch, job["reps"], inner_calls(workload, batch))
        rows.append(Row("train_step", workload, JAX, samples, batch, step_flops(sizes, batch)))
    return rows


def sklearn_rows(job):
    from . import peers

    return [Row("epoch", workload, SKLEARN,
                peers.sklearn_epoch(WORKLOADS[workload][0], batch, job["reps"]), batch)
            for workload, batch in job["workloads"] if times_epoch(workload, batch)]


KINDS = {"fusedense": fusedense_rows, "torch": torch_rows, "jax": jax_rows, "sklearn": sklearn_rows}


def main():
    job = json.load(sys.stdin)
    if job.get("kind") not in KINDS:
        raise ValueError(f"job kind must be one of {', '.join(KINDS)}; got {job.get('kind')!r}")
    rows = KINDS[job["kind"]](job)
    json.dump([asdict(row) for row in rows], sys.stdout)


if __name__ == "__main__":
    main()
