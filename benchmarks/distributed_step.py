"""Time per data-parallel step against one process, and the all-reduce's share of it.

    python benchmarks/distributed_step.py                  # one process: batch b and 2b
    mpiexec -n 2 python benchmarks/distributed_step.py     # two ranks at batch b each

For the bench workloads S and M (engine.bench.workloads, numba backend, float32), with
``--threads`` compiled-kernel threads a process (default: the cores shared out among the
ranks). Two ranks run two variants of the step: the engine's (one blocking all-reduce of
the flat gradient after the backward) and an experimental one that starts a non-blocking
all-reduce of each layer's gradient as soon as the backward has written it, last layer
first, and waits for them all before the norms (the overlap DDP's buckets give). Prints
one line a figure: the median time per step over the last epochs, and for two ranks the
median time spent in the all-reduce (blocking) or waiting for it (overlapped).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import engine
from engine import distributed
from engine.bench.workloads import WORKLOADS


def _timed(function, into):
    def run(*args, **kwargs):
        began = time.perf_counter()
        result = function(*args, **kwargs)
        into.append(time.perf_counter() - began)
        return result
    return run


def _overlap(trainer, MPI):
    """Replace the step's all-reduce by one non-blocking all-reduce a layer, started as the
    backward finishes that layer's gradient (the layers' segments are consecutive in the
    flat buffer), all waited for before the norms."""
    model, parallel = trainer.model, trainer._parallel
    comm, k = parallel.comm.comm, model._k
    layout = model._layout
    layer_slices = []
    for layer in range(len(model.sizes) - 1):
        offsets = [s.offset for s in layout.segments if s.layer == layer]
        ends = [s.offset + s.size for s in layout.segments if s.layer == layer]
        layer_slices.append(slice(min(offsets), max(ends)))
    pending, weight = [], [1.0]

    def backward(X):
        ws = model._workspace(X.shape[0])
        for i in reversed(range(len(model._layers))):
            layer, act, grads = model._layers[i], model._layer_acts[i], model._grad_layers[i]
            k.dense_backward(ws.dY[i], X if i == 0 else ws.Y[i - 1], layer["W"], ws.Z[i], act.code, act.param,
                             layer["slope"], model._layer_dropout[i], ws.keys[i],
                             ws.dY[i] if model._linear[i] else ws.Z[i], grads["W"], grads["b"], grads["slope"],
                             None if i == 0 else ws.dY[i - 1])
            bucket = model._grads[layer_slices[i]]
            bucket *= weight[0]
            pending.append(comm.Iallreduce(MPI.IN_PLACE, bucket))

    def reduce_step(grads, loss_slot, w):
        loss_slot *= w
        comm.Allreduce(MPI.IN_PLACE, loss_slot)
        MPI.Request.Waitall(pending)
        pending.clear()

    original_shard = parallel.shard

    def shard(start, stop, reduction):
        s = original_shard(start, stop, reduction)
        weight[0] = s.weight
        return s

    model._backward = backward
    parallel.shard = shard
    return reduce_step


def measure(name, batch, threads, mode, epochs=4, batches_per_epoch=48):
    sizes, _ = WORKLOADS[name]
    engine.set_num_threads(threads)
    world = 1 if mode == "single" else 2
    rows = batch * world * batches_per_epoch
    data = np.random.default_rng(0)
    X = data.standard_normal((rows, sizes[0])).astype(np.float32)
    y = data.integers(0, sizes[-1], rows)
    model = engine.MLP(sizes, activation="relu", seed=0, backend="numba")
    trainer = engine.Trainer(model, optimizer=engine.AdamW(lr=1e-3), data_parallel=mode != "single")
    reduce_times = []
    if mode == "overlap":
        from mpi4py import MPI
        trainer._parallel.reduce_step = _timed(_overlap(trainer, MPI), reduce_times)
    elif mode == "blocking":
        trainer._parallel.reduce_step = _timed(trainer._parallel.reduce_step, reduce_times)
    history = trainer.fit(X, y, epochs=epochs, batch_size=batch, shuffle=True, verbose=0)
    last = history.step_times[batches_per_epoch:]  # the first epoch compiles and warms up
    step = statistics.median(last)
    reduce = statistics.median(reduce_times[batches_per_epoch:]) if reduce_times else None
    return step, reduce, model.num_parameters


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="S,M")
    parser.add_argument("--threads", type=int, default=None, help="kernel threads a process")
    args = parser.parse_args()
    from mpi4py import MPI
    rank, world = distributed.init("numba")
    cores = os.cpu_count()
    threads = args.threads or max(1, cores // world)
    for name in args.workloads.split(","):
        _, b = WORKLOADS[name]
        if world == 1:
            runs = [("single", b, f"1 process, batch {b}, {threads} threads"),
                    ("single", 2 * b, f"1 process, batch {2 * b}, {threads} threads")]
        else:
            runs = [("blocking", b, f"2 ranks x batch {b}, {threads} thread(s) each, one all-reduce"),
                    ("overlap", b, f"2 ranks x batch {b}, {threads} thread(s) each, per-layer Iallreduce")]
        for mode, batch, label in runs:
            MPI.COMM_WORLD.Barrier()
            step, reduce, parameters = measure(name, batch, threads, mode)
            if rank == 0:
                share = "" if reduce is None else f", all-reduce {reduce * 1e3:.3f} ms ({reduce / step:.0%})"
                print(f"{name} ({parameters:,} parameters) {label}: {step * 1e3:.3f} ms/step{share}", flush=True)


if __name__ == "__main__":
    main()
