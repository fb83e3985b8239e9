"""Callbacks that ``Trainer.fit`` calls at the edges of training, epochs and batches."""
from __future__ import annotations

import math

from .validation import number


class Callback:
    """Override any of these; ``self.trainer`` is set before ``on_train_begin``."""

    trainer = None

    def on_train_begin(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_batch_end(self, batch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_end(self, logs=None): ...


class History(Callback):
    """What ``fit`` returns: ``history`` maps each logged name to its per-epoch values."""

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.step_times = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Improvement means lower, except for accuracy-like names (higher). With
    ``restore_best_weights`` the model ends with the weights of its best epoch.
    """

    def __init__(self, monitor="val_loss", patience=3, min_delta=0.0, restore_best_weights=True, mode="auto"):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a logged name such as 'val_loss'; got {type(monitor).__name__}")
        self.monitor = monitor
        self.patience = number(patience, "patience", low=0, integer=True)
        self.min_delta = abs(number(min_delta, "min_delta"))
        self.restore_best_weights = bool(restore_best_weights)
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max'; got {mode!r}")
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode

    def on_train_begin(self, logs=None):
        self.best = -math.inf if self.mode == "max" else math.inf
        self.best_epoch = None
        self.best_weights = None
        self.wait = 0
        self.stopped_epoch = None

    def _improved(self, value):
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitor {self.monitor!r} is not logged; logged: {', '.join(logs)} "
                             "(val_* names need validation_data or validation_split)")
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.trainer.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.trainer.model.set_weights(self.best_weights)
