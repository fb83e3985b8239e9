"""``python -m engine compile``: compile a backend's kernels ahead of time, into its disk
cache, so that a later process (an image's first run, each task of a cluster job) starts
training at once instead of compiling for several seconds.

The kernels are compiled per dtype and per activation, loss and optimizer (and, on the
CPU, serially for small work and in parallel for large: ``kernels.cpu.jit``), so each is
warmed by its own short training run: every activation in a layer wide enough to take
both the serial and the parallel kernels, then every loss and every optimizer, each with
a frozen layer and with ``fit(diagnostics=True)`` (their kernel variants) and followed
by ``evaluate`` and ``predict`` (the inference kernels). numba keeps the result
beside its sources (or in ``NUMBA_CACHE_DIR``); CuPy in its kernel cache.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from . import activations as activations_module
from . import losses as losses_module
from . import optim as optim_module
from .model import MLP
from .trainer import Trainer

DTYPES = ("float32", "float64")
# A batch of 256 rows on a 512-wide layer: 2^17 elements, the work from which the CPU
# backend runs its parallel kernels (kernels.cpu.jit.PARALLEL_MIN_WORK); a batch of 8
# takes the serial ones.
_WIDE, _LARGE_BATCH, _SMALL_BATCH = 512, 256, 8
_FEATURES, _CLASSES = 8, 4


def _targets(loss, rng, rows):
    """Targets a loss accepts for a model of _CLASSES outputs."""
    if loss == "cross_entropy":
        return rng.integers(0, _CLASSES, rows)
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, (rows, _CLASSES)).astype(np.float64)
    return rng.standard_normal((rows, _CLASSES))


def _exercise(backend, dtype, activation="relu", loss="cross_entropy", optimizer="adamw"):
    """At a small and at a large batch: a step, a step with the first layer frozen (the
    backward without its weight gradients), an epoch of ``fit`` with diagnostics (the
    kernels' tallying variants), then evaluate and predict."""
    rng = np.random.default_rng(0)
    model = MLP([_FEATURES, _WIDE, _CLASSES], activation=activation, dtype=dtype, seed=0, backend=backend)
    trainer = Trainer(model, loss=loss, optimizer=optimizer, metrics=None)
    for rows in (_SMALL_BATCH, _LARGE_BATCH):
        X, y = rng.standard_normal((rows, _FEATURES)), _targets(loss, rng, rows)
        trainer.train_step(X, y)
        model.freeze(1)
        trainer.train_step(X, y)
        model.unfreeze()
        trainer.fit(X, y, epochs=1, batch_size=rows, diagnostics=True, verbose=0)
        trainer.evaluate(X, y)
        model.predict(X)


def plan(dtypes=DTYPES, activations=None, losses=None, optimizers=None):
    """The runs that compile the kernels of these choices (default: all of each): one
    per (dtype, activation), (dtype, loss) and (dtype, optimizer)."""
    activations = activations_module.NAMES if activations is None else activations
    losses = losses_module.NAMES if losses is None else losses
    optimizers = optim_module.NAMES if optimizers is None else optimizers
    runs = []
    for dtype in dtypes:
        runs += [{"dtype": dtype, "activation": a} for a in activations]
        runs += [{"dtype": dtype, "loss": name} for name in losses]
        runs += [{"dtype": dtype, "optimizer": name} for name in optimizers]
    return runs


def run(backend=None, dtypes=DTYPES, activations=None, losses=None, optimizers=None, verbose=1):
    """Compile the kernels of every run of :func:`plan` on ``backend`` (default: the
    selected one), with a progress bar at ``verbose=1``; returns the number of runs."""
    runs = plan(dtypes, activations, losses, optimizers)
    for options in tqdm(runs, desc="compiling kernels", unit="run", disable=verbose != 1):
        _exercise(backend, **options)
    return len(runs)
