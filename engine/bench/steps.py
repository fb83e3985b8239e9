"""fusedense's own training work, as the benchmarks time it: a training step (forward,
fused loss, backward, decisions, one optimizer launch) and a whole epoch of ``fit``.

Before a backend's step is timed, :func:`check_step` takes one step from the same
weights on the same batch on that backend and on the NumPy reference and compares the
loss and the updated weights.
"""
from __future__ import annotations

import numpy as np

from .. import backend as backend_module
from .timing import host_timed, timer
from .workloads import N_BATCHES, batches

# One step of float32 sums in another order than the reference's (GEMMs over up to 4096
# terms, float32 rounding at 6e-8 each): the loss to this relative tolerance, each
# parameter's gradient to it times the gradient's largest magnitude.
STEP_TOLERANCE = 1e-4


def _trainer(backend, sizes, optimizer=None, seed=0, normalization=None, compiled=True):
    from ..model import MLP
    from ..optim import AdamW
    from ..trainer import Trainer
    model = MLP(sizes, seed=seed, backend=backend, normalization=normalization)
    return Trainer(model, optimizer=optimizer or AdamW(), metrics=(), compiled_steps=compiled)


def check_step(backend, sizes, batch, normalization=None, compiled=True):
    """Raise AssertionError unless a step on ``backend`` computes the reference's loss and
    gradients. The step is plain SGD at lr 1, so each parameter moves by exactly its
    gradient (Adam's first step moves every weight by about lr whatever the gradient, and
    would hide a wrong one); the optimizers are checked on their own (engine.bench.cases).
    ``compiled``: the step as one compiled call where the backend has it
    (engine.compiled_steps), else op by op."""
    from ..optim import SGD

    if backend == "numpy":
        return
    X, y = batches(sizes, batch)
    if compiled:  # a batch size's first step in a process runs op by op (engine.compiled_steps)
        _trainer(backend, sizes, SGD(lr=1.0), normalization=normalization).train_step(X[1], y[1])
    results = []
    for name in (backend, "numpy"):
        trainer = _trainer(name, sizes, SGD(lr=1.0), normalization=normalization, compiled=compiled)
        before = trainer.model.get_weights()
        loss = trainer.train_step(X[0], y[0])
        results.append((loss, [w - w_new for w, w_new in zip(before, trainer.model.get_weights())]))
    (loss, grads), (want_loss, want_grads) = results
    if not np.isclose(loss, want_loss, rtol=STEP_TOLERANCE):
        raise AssertionError(f"a training step on {backend} gives loss {loss} where the reference gives {want_loss}")
    # Each parameter at the scale of its own gradient, but not below a thousandth of the
    # step's largest: a gradient that cancels to about 0 (a bias under batch norm sums the
    # normalized gradient over the batch, zero up to rounding) is rounding noise there.
    step_scale = max(np.abs(want).max() for want in want_grads)
    for i, (got, want) in enumerate(zip(grads, want_grads)):
        scale = max(np.abs(want).max(), 1e-3 * step_scale, 1e-6)
        if not np.allclose(got, want, rtol=0, atol=STEP_TOLERANCE * scale):
            raise AssertionError(f"a training step on {backend} computes the gradient of parameter {i} unlike "
                                 f"the reference (by up to {np.abs(got - want).max():.3g})")


def engine_step(backend, sizes, batch, reps, inner, normalization=None, compiled=True):
    """Seconds per training step of an MLP of ``sizes`` (AdamW, no metrics; hidden layers
    normalized by ``normalization``), cycling distinct batches; one sample per rep
    (:func:`step_call`)."""
    return timer(backend)(step_call(backend, sizes, batch, normalization, compiled), reps, inner)


def step_call(backend, sizes, batch, normalization=None, compiled=True):
    """A call taking one training step of an MLP of ``sizes`` (AdamW, no metrics; hidden
    layers normalized by ``normalization``), cycling distinct batches, after three untimed
    ones. ``compiled``: each step one compiled call where the backend can
    (engine.compiled_steps)."""
    X, y = batches(sizes, batch)
    trainer = _trainer(backend, sizes, normalization=normalization, compiled=compiled)
    counter = [0]
    if backend == "cupy":
        # A GPU step is timed as fit runs it: the batches already on the device and the
        # loss left there (train_step would add a wait for the device and a copy per step).
        k = backend_module.module(backend)
        X, y = k.to_device(X, np.float32), k.to_device(y, np.int64)
        slot = k.empty(1, np.float64)

        def step():
            i = counter[0] = (counter[0] + 1) % N_BATCHES
            trainer._step(X[i], y[i], slot)
    else:
        def step():
            i = counter[0] = (counter[0] + 1) % N_BATCHES
            trainer.train_step(X[i], y[i])

    for _ in range(3):
        step()
    return step


def engine_epoch(backend, sizes, batch, reps, compiled=True):
    """Seconds per epoch of ``fit`` over the workload's ``N_BATCHES`` batches as one data
    set; one sample per rep (:func:`fit_call`)."""
    # fit returns after reading the device's record: host timing is the whole fit
    return host_timed(fit_call(backend, sizes, batch, compiled), reps, 1)


def fit_call(backend, sizes, batch, compiled=True, epochs=1):
    """A call of ``fit`` for ``epochs`` epochs over the workload's ``N_BATCHES`` batches as
    one data set (shuffled, no validation, no progress bar), after an untimed one.
    ``compiled``: runs of batches as one compiled call where the backend can
    (engine.compiled_steps). Time it on the host: fit returns after reading the
    device's record."""
    X, y = batches(sizes, batch)
    X, y = X.reshape(-1, sizes[0]), y.reshape(-1)
    trainer = _trainer(backend, sizes, compiled=compiled)

    def fit():
        trainer.fit(X, y, epochs=epochs, batch_size=batch, verbose=0)
    fit()  # compiles (then the timer's untimed call measures the length of fit's compiled runs)
    return fit
