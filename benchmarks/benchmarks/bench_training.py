"""Training as a user runs it, per fast backend: a training step of the standard workloads
S, M and L, an epoch of ``fit`` and a ``predict`` on scikit-learn's digits.

And figures that stay put on a noisy machine: each workload's step time over its GEMM
floor, both measured in the same process, and the test loss and accuracy of the demo's
fixed seeded run (the quality the kernels' speed must not cost).
"""
import contextlib
import functools
import io
import itertools
import statistics

import engine
from engine.bench import floors, steps, worker
from engine.bench.workloads import WORKLOADS, batches

from .common import BACKENDS, calls_per_sample, require

# The demo's model (engine.demo.run builds the same).
DIGITS_SIZES = [64, 256, 128, 10]
DIGITS_BATCH = 32


@functools.cache
def _train_step(workload, backend):
    """(one training step, calls per sample) of an MLP of ``workload`` on ``backend``
    (AdamW, no metrics), cycling the workload's distinct batches, after a check of the
    step against the reference and three untimed steps (compilation, workspaces).
    Memoised: asv re-runs setup around every timed call."""
    sizes, batch = WORKLOADS[workload]
    steps.check_step(backend, sizes, batch)
    X, y = batches(sizes, batch)
    trainer = engine.Trainer(engine.MLP(sizes, seed=0, backend=backend), optimizer=engine.AdamW(), metrics=())
    counter = itertools.count()

    def step():
        i = next(counter) % len(X)
        trainer.train_step(X[i], y[i])  # returns the loss on the host: a GPU step is waited for

    for _ in range(3):
        step()
    return step, calls_per_sample(step)


class TrainStep:
    """A step as ``Trainer.train_step`` takes it: forward, fused loss, backward, decisions,
    the optimizer, the loss back on the host."""

    params = (list(WORKLOADS), BACKENDS)
    param_names = ("workload", "backend")
    timeout = 300  # L: the check on the reference, model set-up and warm steps take some 10 s

    def setup(self, workload, backend):
        require(backend)
        self.step, self.number = _train_step(workload, backend)
        if workload == "L":
            # About 0.5 s a step on 2 cores: 2 or 3 samples a round, no warm-up beyond
            # the three steps above.
            self.repeat = (2, 3, 2.0)
            self.warmup_time = 0

    def time_train_step(self, workload, backend):
        self.step()


class StepOverGemmFloor:
    """Time per training step over its GEMM floor: the same step's GEMMs alone through the
    backend's BLAS (engine.bench.floors.gemm_floor), measured in the same process. 1 is a
    step that costs nothing but its GEMMs; the machine's speed moves both alike and
    cancels out. Floor and step are measured in turns, a sample of each per pair, and the
    result is the median of the pairs' ratios (see MemoryBound: a burst of load slows
    both sides of a pair). S and M: at L the GEMMs are nearly the whole step (a ratio of
    about 1 whatever the rest does), and its check, floors and steps take half a minute."""

    params = (["S", "M"], BACKENDS)
    param_names = ("workload", "backend")
    unit = "step time / GEMM floor"
    timeout = 300
    PAIRS = 7

    def setup(self, workload, backend):
        require(backend)
        steps.check_step(backend, *WORKLOADS[workload])

    def track_step_over_gemm_floor(self, workload, backend):
        sizes, batch = WORKLOADS[workload]
        inner = worker.INNER[workload]  # calls per sample: some 10-20 ms on 2 cores
        ratios = []
        for _ in range(self.PAIRS):
            floor = floors.gemm_floor(backend, sizes, batch, 1, inner)[0]
            step = steps.engine_step(backend, sizes, batch, 1, inner)[0]
            ratios.append(step / floor)
        return statistics.median(ratios)


@functools.cache
def _digits(backend):
    """The demo's model and trainer on the digits splits of seed 0, after one untimed
    epoch of fit (which compiles what fit and predict call): (fit one epoch, model,
    test split). Memoised: asv re-runs setup around every timed call."""
    from engine import demo

    steps.check_step(backend, DIGITS_SIZES, DIGITS_BATCH)
    train, validation, test = demo.load_digits_splits(0)
    model = engine.MLP(DIGITS_SIZES, activation="relu", output="softmax", dropout=0.1, init="he_uniform", seed=0,
                       backend=backend)
    trainer = engine.Trainer(model, loss="cross_entropy", optimizer=engine.AdamW(lr=2e-3, weight_decay=1e-2),
                             metrics=("accuracy",))

    def fit_epoch():
        trainer.fit(*train, epochs=1, batch_size=DIGITS_BATCH, validation_data=validation, verbose=0)

    fit_epoch()
    return fit_epoch, model, test


class DigitsFit:
    """One epoch of ``fit`` on the digits' 1077 training images, with the validation pass
    and the accuracy metric, as the demo runs it (its model keeps training sample after
    sample: an epoch costs the same)."""

    params = BACKENDS
    param_names = ("backend",)
    timeout = 120

    def setup(self, backend):
        require(backend)
        self.fit_epoch = _digits(backend)[0]

    def time_fit_epoch(self, backend):
        self.fit_epoch()


class DigitsPredict:
    """``model.predict`` of the digits' 360 test images, probabilities back on the host."""

    params = BACKENDS
    param_names = ("backend",)
    timeout = 120

    def setup(self, backend):
        require(backend)
        _, model, (X_test, _) = _digits(backend)
        self.predict = functools.partial(model.predict, X_test)
        self.number = calls_per_sample(self.predict)

    def time_predict(self, backend):
        self.predict()


class DigitsDemo:
    """Test loss and accuracy after ``engine.demo.run(epochs=20, seed=0)`` on each backend:
    fixed by the seed up to the backend's order of summation, so a change is a change of
    what the kernels compute (the tests bound it; this shows its history)."""

    params = BACKENDS
    param_names = ("backend",)
    timeout = 600

    def setup_cache(self):
        from engine import demo

        available = engine.available_backends()
        results = {}
        for backend in (b for b in BACKENDS if b in available):
            with contextlib.redirect_stdout(io.StringIO()):  # the demo prints a summary
                results[backend] = demo.run(epochs=20, seed=0, backend=backend, verbose=0)
        return {"available": available, "results": results}

    setup_cache.timeout = 600

    def setup(self, demo_runs, backend):
        require(backend, demo_runs["available"])

    def track_test_loss(self, demo_runs, backend):
        return demo_runs["results"][backend]["loss"]

    track_test_loss.unit = "cross-entropy"

    def track_test_accuracy(self, demo_runs, backend):
        return demo_runs["results"][backend]["accuracy"]

    track_test_accuracy.unit = "accuracy"
