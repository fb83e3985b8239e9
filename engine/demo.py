"""``python -m engine demo``: an MLP on scikit-learn's handwritten digits (real data)."""
from __future__ import annotations

import statistics
import time

from . import backend as backend_module
from . import distributed
from .callbacks import EarlyStopping
from .data import standardize
from .model import MLP
from .optim import AdamW
from .trainer import Trainer


def load_digits_splits(seed):
    """Digits (1797 8x8 images) standardized, split 60/20/20 train/validation/test."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit("the demo needs scikit-learn: pip install 'fusedense[datasets]'") from None
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=seed)
    X_train, X_val, y_train, y_val = train_test_split(X_train, y_train, test_size=0.25, stratify=y_train,
                                                      random_state=seed)
    X_train, X_val, X_test = standardize(X_train, X_val, X_test)
    return (X_train, y_train), (X_val, y_val), (X_test, y_test)


def run(epochs=40, batch_size=32, seed=0, backend=None, verbose=1, data_parallel=False):
    """Train and report; ``data_parallel``: one of the processes of an MPI job (``mpirun
    -n 2 python -m engine demo --distributed``), each training on its shard of every batch
    of ``batch_size`` rows a process, rank 0 alone printing."""
    name = backend or backend_module.get_backend()
    rank, world_size = distributed.init(name) if data_parallel else (0, 1)
    say = print if rank == 0 else (lambda *args: None)
    (X_train, y_train), validation, (X_test, y_test) = load_digits_splits(seed)
    model = MLP([64, 256, 128, 10], activation="relu", output="softmax", dropout=0.1, init="he_uniform",
                seed=seed, backend=name)
    trainer = Trainer(model, loss="cross_entropy", optimizer=AdamW(lr=2e-3, weight_decay=1e-2),
                      metrics=("accuracy",), callbacks=[EarlyStopping("val_loss", patience=5)],
                      data_parallel=data_parallel)
    say(f"fusedense demo: digits, {len(X_train)} train / {len(validation[0])} validation / {len(X_test)} test, "
        f"{model!r}" + (f", {world_size} processes" if data_parallel else ""))
    started = time.perf_counter()
    history = trainer.fit(X_train, y_train, epochs=epochs, batch_size=batch_size, validation_data=validation,
                          verbose=verbose)
    elapsed = time.perf_counter() - started
    result = trainer.evaluate(X_test, y_test)
    step_ms = statistics.median(history.step_times) * 1e3
    say(f"epochs run: {len(history.epoch)}, wall time {elapsed:.1f} s")
    say(f"test loss: {result['loss']:.4f}")
    say(f"test accuracy: {result['accuracy']:.4f}")
    say(f"median time per step: {step_ms:.3f} ms (backend {model.backend}, batch {batch_size}"
        + (f" a process, {batch_size * world_size} in all)" if data_parallel else ")"))
    return result
