"""Where a numba training step's time goes, op by op, and the compiled step beside it.

    python benchmarks/step_profile.py                 # S, M, L at 1 and 2 threads
    python benchmarks/step_profile.py --workloads S,M --threads 2

For each bench workload (engine.bench.workloads: ReLU MLP, softmax-CE, AdamW, float32)
and thread count (engine.set_num_threads: numba's and the BLAS's), three figures per step,
each the median over the timed steps: the compiled step (``train_step`` as one compiled
call, engine.compiled_steps), the op-by-op step, and the op-by-op step split into its ops
(the backend's functions timed from Python, so each includes its wrapper; "python" is the
rest: train_step's checks, the record, the loop). A GEMM floor (the step's GEMMs alone,
engine.bench.floors) sets the scale. Each step is checked against the NumPy reference
before it is timed (engine.bench.steps.check_step).
"""
from __future__ import annotations

import argparse
import collections
import statistics
import time

import engine
from engine import backend as backend_module
from engine.bench import floors, steps
from engine.bench.workloads import N_BATCHES, WORKLOADS, batches

OPS = ("dense_forward", "softmax_cross_entropy", "dense_backward", "grad_sq_norms", "guard_update", "adam")


def _timed_ops(k, times):
    """Replace the ops of module ``k`` a step calls by timed ones; returns the originals."""
    originals = {name: getattr(k, name) for name in OPS}

    def timed(name, function):
        def run(*args, **kwargs):
            began = time.perf_counter()
            result = function(*args, **kwargs)
            times[name] += time.perf_counter() - began
            return result
        return run

    for name, function in originals.items():
        setattr(k, name, timed(name, function))
    return originals


def _steps_ms(trainer, X, y, n_steps):
    samples = []
    for i in range(n_steps):
        began = time.perf_counter()
        trainer.train_step(X[i % N_BATCHES], y[i % N_BATCHES])
        samples.append(time.perf_counter() - began)
    return statistics.median(samples) * 1e3


def profile(workload, n_steps):
    sizes, batch = WORKLOADS[workload]
    X, y = batches(sizes, batch)
    for compiled in (True, False):
        steps.check_step("numba", sizes, batch, compiled=compiled)
    floor = statistics.median(floors.gemm_floor("numba", sizes, batch, 5, 1)) * 1e3
    trainers = {compiled: engine.Trainer(engine.MLP(sizes, seed=0, backend="numba"), optimizer=engine.AdamW(),
                                         metrics=(), compiled_steps=compiled) for compiled in (True, False)}
    for trainer in trainers.values():
        _steps_ms(trainer, X, y, 3)  # compilation, workspaces
    compiled_ms = _steps_ms(trainers[True], X, y, n_steps)
    op_by_op_ms = _steps_ms(trainers[False], X, y, n_steps)
    k = backend_module.module("numba")
    times = collections.Counter()
    originals = _timed_ops(k, times)
    try:
        began = time.perf_counter()
        for i in range(n_steps):
            trainers[False].train_step(X[i % N_BATCHES], y[i % N_BATCHES])
        total = time.perf_counter() - began
    finally:
        for name, function in originals.items():
            setattr(k, name, function)
    split = {name: times[name] / n_steps * 1e3 for name in OPS}
    split["python"] = total / n_steps * 1e3 - sum(split.values())
    return floor, compiled_ms, op_by_op_ms, split


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="S,M,L")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (default: 200 S, 50 M, 6 L)")
    args = parser.parse_args(argv)
    default_steps = {"S": 200, "M": 50, "L": 6}
    print(f"{'workload':<9}{'threads':>8}{'floor ms':>10}{'compiled':>10}{'op by op':>10}   op by op, per op (ms)")
    for threads in (int(t) for t in args.threads.split(",")):
        engine.set_num_threads(threads)
        for workload in args.workloads.split(","):
            floor, compiled_ms, op_by_op_ms, split = profile(workload, args.steps or default_steps[workload])
            ops = ", ".join(f"{name} {ms:.3f}" for name, ms in split.items())
            print(f"{workload:<9}{threads:>8}{floor:>10.3f}{compiled_ms:>10.3f}{op_by_op_ms:>10.3f}   {ops}")


if __name__ == "__main__":
    main()
