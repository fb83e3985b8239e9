"""Training steps on the standard workloads, their ratio to the GEMM floor, and the
quality a fixed training run reaches (tracked next to the speed)."""
import statistics
import subprocess
import sys

import engine
from engine import bench

from .common import WORKLOADS, batches, fast_backends


class TrainStep:
    params = (list(WORKLOADS), fast_backends())
    param_names = ["workload", "backend"]

    def setup(self, workload, backend):
        sizes, batch = WORKLOADS[workload]
        self.X, self.y = batches(sizes, batch)
        self.trainer = engine.Trainer(engine.MLP(sizes, seed=0, backend=backend), optimizer=engine.AdamW(),
                                      metrics=())
        self.i = 0
        for _ in range(3):  # compiles and allocates the workspaces outside the timing
            self.time_train_step(workload, backend)

    def time_train_step(self, workload, backend):
        self.i = (self.i + 1) % len(self.X)
        self.trainer.train_step(self.X[self.i], self.y[self.i])


class RatioToGemmFloor:
    """Time per step over the same step's GEMMs alone through the backend's BLAS,
    measured in one run (unitless)."""

    params = (list(WORKLOADS), fast_backends())
    param_names = ["workload", "backend"]
    unit = "ratio"

    def track_ratio(self, workload, backend):
        sizes, batch = WORKLOADS[workload]
        inner = {"S": 200, "M": 20}[workload]
        matmul = bench.backend_blas(backend)[1]
        floor = statistics.median(bench.gemm_floor(sizes, batch, 5, inner, matmul))
        return statistics.median(bench.engine_step(backend, sizes, batch, 5, inner)) / floor


class DigitsQuality:
    """Test accuracy and loss of the demo's training run (deterministic given the seed)."""

    params = fast_backends()
    param_names = ["backend"]
    timeout = 300

    def setup_cache(self):
        from engine import demo
        return {b: demo.run(epochs=20, seed=0, backend=b, verbose=0) for b in fast_backends()}

    def track_test_accuracy(self, results, backend):
        return results[backend]["accuracy"]

    def track_test_loss(self, results, backend):
        return results[backend]["loss"]


def time_import_and_first_step():
    """A new process: import, build a model and take one step (warm compilation cache)."""
    code = ("import numpy as np, engine; m = engine.MLP([64, 128, 10], seed=0); "
            "engine.Trainer(m).train_step(np.zeros((64, 64), np.float32), np.zeros(64, np.int64))")
    subprocess.run([sys.executable, "-c", code], check=True)
