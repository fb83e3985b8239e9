"""``python -m engine bench``: every provider's jobs, each in a process of its own, then
the peers held against the floors and roofs fusedense measured in the same run, and the
outputs (table or JSON, CSV, plot) with the warnings a reader needs."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass

from tqdm.auto import tqdm

from .. import backend as backend_module
from .report import Row, lines, plot, print_table, write_csv
from .worker import NUMPY_FLOOR, PEERS
from .workloads import WORKLOADS

NOISY_REPS = 3  # fewer samples than this and a median is one busy moment away from wrong


@dataclass
class Failure:
    job: dict
    message: str

    @property
    def ours(self):
        """A fusedense job failed (a kernel disagrees with the reference, a crash): the run
        fails. A peer that cannot run only loses its rows."""
        return self.job["kind"] == "fusedense"


def _installed(*modules):
    return all(importlib.util.find_spec(name) is not None for name in modules)


def jobs(workloads, backends, batch_sizes, kernels, peers, reps, normalization=None):
    """The jobs of a run: per backend and workload, then per backend its kernels, then
    the peers that are installed, per workload."""
    def pairs(workload):
        return [[workload, batch] for batch in (batch_sizes or [WORKLOADS[workload][1]])]

    on_cpu = [b for b in backends if b != "cupy"]
    holder = "numpy" if "numpy" in on_cpu else on_cpu[0] if on_cpu else None  # times NumPy's floor
    found = [{"kind": "fusedense", "backend": b, "workloads": pairs(w), "reps": reps, "numpy_floor": b == holder,
              "normalization": normalization} for b in backends for w in workloads]
    if kernels:
        found += [{"kind": "fusedense", "backend": b, "workloads": [], "kernels": True, "reps": reps}
                  for b in backends if b != "numpy"]
    if not peers:
        return found
    gpu = "cupy" in backends
    if _installed("torch"):
        found += [{"kind": "torch", "gpu": gpu, "workloads": pairs(w), "reps": reps} for w in workloads]
        if kernels:
            found.append({"kind": "torch", "gpu": gpu, "workloads": [], "kernels": True, "reps": reps})
    if not gpu and _installed("jax", "optax"):  # JAX's CPU build only, here
        found += [{"kind": "jax", "workloads": pairs(w), "reps": reps} for w in workloads]
    if _installed("sklearn") and "S" in workloads:
        found.append({"kind": "sklearn", "workloads": pairs("S"), "reps": reps})
    return found


def _describe(job):
    what = job.get("backend", job["kind"])
    return f"{what} kernels" if job.get("kernels") else f"{what} {job['workloads'][0][0]}"


def run_job(job):
    """The rows of ``job``, measured by a new Python process, or a Failure."""
    done = subprocess.run([sys.executable, "-m", "engine.bench.worker"], input=json.dumps(job),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return Failure(job, tail[0])
    return [Row(**fields) for fields in json.loads(done.stdout)]


def hold_peers(rows):
    """Hold every CPU step against NumPy's GEMM floor, and each peer's step against the
    floor of its device (NumPy's BLAS on the CPU, the cupy backend's cuBLAS on the GPU)
    and its kernels against the roof, all measured by fusedense in the same run."""
    floors, roofs = {}, {}
    for row in rows:
        if row.op == "gemm_floor":
            device = "cpu" if row.provider == NUMPY_FLOOR else row.device
            floors.setdefault((row.workload, row.batch, device), row.median("ms"))
        if row.op == "roof":
            roofs.setdefault(row.device, row.roof_gbps)
    peers = set(PEERS)
    for row in rows:
        if row.op == "train_step":
            if row.device == "cpu":
                row.numpy_floor_ms = floors.get((row.workload, row.batch, "cpu"))
            if row.provider in peers:
                row.floor_ms = floors.get((row.workload, row.batch, row.device))
        elif row.provider in peers and row.bytes:
            row.roof_gbps = roofs.get(row.device)
    return rows


TRAINING = ("gemm_floor", "train_step", "fit_step", "train_step batch norm", "train_step layer norm")


def in_order(rows):
    """Training rows by workload and batch (floors first), then epochs, then the roofs
    and kernels by label; providers in the order they were measured (sorting is stable)."""
    workloads = list(WORKLOADS)
    kernels = list(dict.fromkeys(row.workload for row in rows if row.op not in TRAINING + ("epoch",)))

    def key(row):
        if row.op in TRAINING:
            return 0, workloads.index(row.workload), row.batch, TRAINING.index(row.op)
        if row.op == "epoch":
            return 1, workloads.index(row.workload), row.batch, 0
        return 2, kernels.index(row.workload), 0, 0
    return sorted(rows, key=key)


def warnings_for(rows, reps):
    """What a reader must know before trusting the figures."""
    found = []
    if reps < NOISY_REPS:
        found.append(f"--reps {reps}: a median of fewer than {NOISY_REPS} samples is noise on a busy machine")
    for row in rows:
        ratio = row.median("x GEMM floor")
        if row.op in ("train_step", "fit_step") and ratio is not None and ratio < 1:
            found.append(f"{row.provider} on {row.workload} (batch {row.batch}) ran {ratio:.2f}x its GEMM floor: a "
                         f"step cannot beat its own GEMMs, so the machine was busy while one of them was timed; "
                         f"rerun with more --reps")
    return found


def run(workloads=("S", "M", "L"), backends=None, kernels=True, peers=True, reps=5, batch_sizes=None,
        as_json=False, csv_path=None, plot_path=None, normalization=None):
    """Measure, print (a table, or ``as_json``), write ``csv_path`` and draw ``plot_path``;
    returns (rows, failures)."""
    backends = backends or backend_module.available_backends()
    planned = jobs(workloads, backends, batch_sizes, kernels, peers, reps, normalization)
    rows, failures = [], []
    for job in tqdm(planned, desc="bench", unit="job", file=sys.stderr, disable=None):
        found = run_job(job)
        (failures.append if isinstance(found, Failure) else rows.extend)(found)
    rows = in_order(hold_peers(rows))
    if as_json:
        print(json.dumps([row.as_dict() for row in rows], indent=1))
    else:
        print("ratio: time per step over the GEMM floor through the provider's BLAS, /NumPy: over NumPy's BLAS "
              "floor (training rows); share of the better memory roof, copy or axpy (kernel rows)")
        print_table(rows)
    if csv_path or plot_path:
        found = lines(rows)
        if csv_path:
            write_csv(found, csv_path)
        if plot_path:
            plot(found, plot_path)
    for warning in warnings_for(rows, reps):
        print(f"warning: {warning}", file=sys.stderr)
    for failure in failures:
        print(f"{'error' if failure.ours else 'warning'}: {_describe(failure.job)} failed: {failure.message}",
              file=sys.stderr)
    return rows, failures
