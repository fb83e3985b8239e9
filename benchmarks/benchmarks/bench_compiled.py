"""The numba backend's compiled steps (engine.compiled_steps): a training step, and an epoch
of ``fit``, as one compiled call against the same run op by op.

Both paths train bit for bit alike (tests/test_compiled_steps.py); what differs is the
Python around the kernels, which on a small model is most of a step. Before any timing,
each path's step is checked against the NumPy reference (engine.bench.steps.check_step).
"""
import functools
import statistics

import engine
from engine.bench import steps, timing, worker
from engine.bench.workloads import WORKLOADS, batches

from .common import calls_per_sample, require

PATHS = ["compiled", "op_by_op"]


@functools.cache
def _train_step(workload, path):
    """(one train_step of ``workload`` on numba along ``path``, calls per sample), after a
    check against the reference and three untimed steps. Memoised (asv re-runs setup)."""
    sizes, batch = WORKLOADS[workload]
    compiled = path == "compiled"
    steps.check_step("numba", sizes, batch, compiled=compiled)
    step = steps.step_call("numba", sizes, batch, compiled=compiled)
    return step, calls_per_sample(step)


class CompiledTrainStep:
    """``Trainer.train_step`` on numba, compiled into one call or op by op."""

    params = (["S", "M"], PATHS)
    param_names = ("workload", "path")
    timeout = 300

    def setup(self, workload, path):
        require("numba")
        self.step, self.number = _train_step(workload, path)

    def time_train_step(self, workload, path):
        self.step()


@functools.cache
def _fit_epoch(workload, path):
    """An epoch of ``fit`` over the workload's 64 distinct batches as one data set
    (shuffled, accuracy, no progress bar) on numba along ``path``, after one untimed epoch."""
    sizes, batch = WORKLOADS[workload]
    compiled = path == "compiled"
    steps.check_step("numba", sizes, batch, compiled=compiled)
    X, y = batches(sizes, batch)
    X, y = X.reshape(-1, sizes[0]), y.reshape(-1)
    trainer = engine.Trainer(engine.MLP(sizes, seed=0, backend="numba"), optimizer=engine.AdamW(),
                             metrics=("accuracy",), compiled_steps=compiled)

    def epoch():
        trainer.fit(X, y, epochs=1, batch_size=batch, verbose=0)

    epoch()
    return epoch


class CompiledFitEpoch:
    """One epoch of ``fit`` on numba: runs of batches as one compiled call, or op by op."""

    params = (["S", "M"], PATHS)
    param_names = ("workload", "path")
    timeout = 300

    def setup(self, workload, path):
        require("numba")
        self.epoch = _fit_epoch(workload, path)

    def time_fit_epoch(self, workload, path):
        self.epoch()


class CompiledSpeedup:
    """Time per step op by op over compiled, both measured in the same process in turns (a
    sample of each per pair; the median of the pairs' ratios): above 1 is what the compiled
    step saves, and the machine's speed cancels out."""

    params = ["S", "M"]
    param_names = ("workload",)
    unit = "op-by-op step time / compiled step time"
    timeout = 300
    PAIRS = 7

    def setup(self, workload):
        require("numba")
        for compiled in (True, False):
            steps.check_step("numba", *WORKLOADS[workload], compiled=compiled)

    def track_speedup(self, workload):
        sizes, batch = WORKLOADS[workload]
        inner = worker.INNER[workload]
        compiled, op_by_op = timing.interleaved(
            [(timing.host_timed, steps.step_call("numba", sizes, batch, compiled=compiled), inner)
             for compiled in (True, False)], self.PAIRS)
        return statistics.median(slow / fast for fast, slow in zip(compiled, op_by_op))
