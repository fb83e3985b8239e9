"""Callbacks that ``Trainer.fit`` calls at the edges of training, epochs and batches."""
from __future__ import annotations

import csv
import math
import os
import re
import string

import numpy as np

from .schedules import Scaled
from .validation import number, one_of

# Names of logged quantities that improve upwards; "auto" mode reads any other one as a
# loss or an error (lower is better), as Keras does.
_HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "r2")


class Callback:
    """Override any of these; ``self.trainer`` is set before ``on_train_begin``."""

    trainer = None
    # Under data parallelism (Trainer(data_parallel=True)), run on rank 0 alone: set by the
    # callbacks that write files.
    main_process_only = False

    def on_train_begin(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_batch_end(self, batch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_end(self, logs=None): ...

    def required_logs(self):
        """The names this callback reads from the epoch logs (e.g. its ``monitor``):
        ``fit`` checks that it will log each of them before it trains the first epoch."""
        return ()

    def _reads_batches(self):
        """Whether on_batch_end is overridden, by the class or (as LambdaCallback does) on
        the instance: fit reads each batch's loss from the device only for such callbacks."""
        return getattr(self.on_batch_end, "__func__", None) is not Callback.on_batch_end


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

    def plot(self, path=None, keys=None):
        """A matplotlib figure of the curves, one panel per quantity: its training values
        (logged as ``name``) next to its validation values (``val_name``) against the epoch
        (counted from 1), each line labelled with its logged name and each panel titled with
        the quantity.

        ``keys``: the quantities to draw, in panel order (``"loss"``, ``"accuracy"``, ...;
        ``"val_loss"`` stands for the ``"loss"`` panel). By default the loss and the
        metrics: every logged quantity but the learning rate ``"lr"`` and the per-layer
        diagnostics (names with a ``/``, e.g. ``"grad_norm/1"``); asked for, ``"lr"`` is
        drawn on a log scale. At most three panels a row. ``path``: where to save the
        figure (the format follows its extension, e.g. ``.png``). Returns the figure
        (made with pyplot: ``plt.show()`` shows it, ``plt.close(fig)`` frees it). Needs
        matplotlib: ``pip install 'fusedense[plot]'``.
        """
        quantities = self._quantities(keys)
        if path is not None:
            path = _check_path(path)
        try:
            import matplotlib.pyplot as plt
            from matplotlib.ticker import MaxNLocator
        except ImportError:
            raise ImportError("history.plot needs matplotlib: pip install 'fusedense[plot]'") from None
        n_cols = min(3, len(quantities))
        n_rows = -(-len(quantities) // n_cols)
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.5 * n_cols, 3.4 * n_rows), squeeze=False)
        for ax, quantity in zip(axes.flat, quantities):
            for name in (quantity, f"val_{quantity}"):
                if name in self.history:
                    values = self.history[name]
                    ax.plot(np.arange(1, len(values) + 1), values, marker="." if len(values) < 30 else None,
                            label=name)
            ax.set_title(quantity)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if quantity == "lr":
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend()
        for ax in axes.flat[len(quantities):]:
            ax.set_axis_off()
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig

    def _quantities(self, keys):
        """The panels ``plot`` draws for ``keys`` (see there), checked against the logged names."""
        logged = list(self.history)
        if not logged:
            raise ValueError("history has nothing logged to plot: fit has not finished an epoch with it")
        every = list(dict.fromkeys(name.removeprefix("val_") for name in logged))
        if keys is None:
            return [q for q in every if q != "lr" and "/" not in q]
        if isinstance(keys, str):
            keys = [keys]
        try:
            keys = list(keys)
        except TypeError:
            raise TypeError(f"keys must be a list of logged names such as ['loss', 'accuracy']; "
                            f"got {type(keys).__name__}") from None
        if not keys:
            raise ValueError("keys must name at least one logged quantity; got an empty list")
        for key in keys:
            if not isinstance(key, str):
                raise TypeError(f"keys must hold logged names (str); got {type(key).__name__}")
        wanted = list(dict.fromkeys(key.removeprefix("val_") for key in keys))
        missing = [key for key in keys if key.removeprefix("val_") not in every]
        if missing:
            raise ValueError(f"keys must be logged names; {', '.join(map(repr, missing))} not logged "
                             f"(logged: {', '.join(map(repr, logged))})")
        return wanted


def _check_monitor(monitor):
    if not isinstance(monitor, str):
        raise TypeError(f"monitor must be a logged name such as 'val_loss'; got {type(monitor).__name__}")
    return monitor


def _check_mode(mode, monitor):
    """"min" or "max" for ``mode``; "auto" decides by the monitored name."""
    one_of(mode, ("auto", "min", "max"), "mode")
    if mode != "auto":
        return mode
    return "max" if any(word in monitor for word in _HIGHER_IS_BETTER) else "min"


def _check_flag(value, argument):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argument} must be True or False; got {type(value).__name__}")
    return bool(value)


def _check_path(path):
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"path must be a file path (str or os.PathLike); got {type(path).__name__}")
    return path


def _improved(value, best, mode, min_delta=0.0):
    # NaN compares False both ways: a NaN epoch is never an improvement.
    return value > best + min_delta if mode == "max" else value < best - min_delta


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Improvement means lower, except (``mode="auto"``) for names of quantities that grow
    better: accuracy, auc, precision, recall, f1, r2 (higher). With
    ``restore_best_weights`` the model ends with the weights of its best epoch.
    """

    def __init__(self, monitor="val_loss", patience=3, min_delta=0.0, restore_best_weights=True, mode="auto"):
        self.monitor = _check_monitor(monitor)
        self.patience = number(patience, "patience", low=0, integer=True)
        self.min_delta = abs(number(min_delta, "min_delta"))
        self.restore_best_weights = bool(restore_best_weights)
        self.mode = _check_mode(mode, monitor)

    def required_logs(self):
        return (self.monitor,)

    def on_train_begin(self, logs=None):
        self.best = -math.inf if self.mode == "max" else math.inf
        self.best_epoch = None
        self.best_weights = None
        self.wait = 0
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = logs[self.monitor]
        if _improved(value, self.best, self.mode, self.min_delta):
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


# torch's ReduceLROnPlateau eps: a cut smaller than this leaves the rate as it is.
_MIN_CUT = 1e-8


class ReduceLROnPlateau(Callback):
    """Lower the learning rate when ``monitor`` stops improving: torch's
    ``ReduceLROnPlateau``, stepped with the monitored value at the end of every epoch.

    ``min_delta`` is torch's ``threshold``. With ``threshold_mode="rel"`` (torch's
    default) an epoch improves when ``value < best * (1 - min_delta)`` (``mode`` min) or
    ``value > best * (1 + min_delta)`` (max); with ``"abs"`` when
    ``value < best - min_delta`` or ``value > best + min_delta`` (Keras's min_delta). A NaN
    never improves. ``mode`` as in EarlyStopping ("auto": max for accuracy, auc,
    precision, recall, f1, r2, else min).

    Every epoch that does not improve is bad; when more than ``patience`` epochs in a row
    are bad, the rate ``old`` of the next update becomes
    ``new = max(old * factor, min_lr)`` (no change when ``old - new <= 1e-8``), the count
    restarts, and the next ``cooldown`` epochs count no bad epoch.

    A float ``lr`` of the optimizer is replaced by ``new`` (exactly torch). A schedule is
    multiplied: the optimizer's ``lr`` becomes ``schedules.Scaled(schedule, scale)`` with
    ``scale`` multiplied by ``new / old``, so the schedule keeps its shape at the lower
    level (``min_lr`` bounds the rate at the cut, not the schedule's later values), as
    torch's chained schedulers scale from the rate a plateau cut left. The state (best
    value, counters) carries over from one ``fit`` to the next, like a torch scheduler
    object, so that ``fit(epochs=1)`` in a loop behaves like one longer ``fit``. The cut
    is the optimizer's ``lr``, which checkpoints do not record: a trainer built afresh
    for ``load_checkpoint`` starts from the rate it is given.
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, min_delta=1e-4, cooldown=0, min_lr=0.0,
                 mode="auto", threshold_mode="rel"):
        self.monitor = _check_monitor(monitor)
        self.factor = number(factor, "factor", low=0.0, high=1.0, high_open=True)
        self.patience = number(patience, "patience", low=0, integer=True)
        self.min_delta = number(min_delta, "min_delta", low=0.0)
        self.cooldown = number(cooldown, "cooldown", low=0, integer=True)
        self.min_lr = number(min_lr, "min_lr", low=0.0)
        self.mode = _check_mode(mode, monitor)
        self.threshold_mode = one_of(threshold_mode, ("rel", "abs"), "threshold_mode")
        self.best = -math.inf if self.mode == "max" else math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def required_logs(self):
        return (self.monitor,)

    def _improved(self, value):
        if self.threshold_mode == "abs":
            return _improved(value, self.best, self.mode, self.min_delta)
        if self.mode == "max":
            return value > self.best * (1.0 + self.min_delta)
        return value < self.best * (1.0 - self.min_delta)

    def on_epoch_end(self, epoch, logs=None):
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._cut()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _cut(self):
        optimizer = self.trainer.optimizer
        old = optimizer.learning_rate()
        new = max(old * self.factor, self.min_lr)
        if old - new <= _MIN_CUT:
            return
        if not callable(optimizer.lr):
            optimizer.lr = new
        elif isinstance(optimizer.lr, Scaled):  # a new object: a schedule the user holds stays as it was
            optimizer.lr = Scaled(optimizer.lr.schedule, optimizer.lr.scale * new / old)
        else:
            optimizer.lr = Scaled(optimizer.lr, new / old)


def _format_fields(path):
    """The logged names ``path``'s format fields use (``epoch`` aside), after checking that
    every field is named and that its format spec can format an epoch number or a value."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(path) if field is not None]
    except ValueError as error:
        raise ValueError(f"path must be a file name or a format string such as 'model-{{epoch:02d}}.npz'; "
                         f"got {path!r} ({error})") from None
    # "{val_loss.real}" or "{x[0]}" still refer to the logged name before the "." or "["
    names = {re.match(r"[^.\[]*", field).group() for field in fields}
    if any(not name or name.isdigit() for name in names):
        raise ValueError(f"path's format fields must be named, {{epoch}} or a logged name such as {{val_loss}}; "
                         f"got a positional field in {path!r}")
    try:
        path.format_map({name: 1 if name == "epoch" else 0.0 for name in names})
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise ValueError(f"path {path!r} cannot be formatted with an epoch number and logged values ({error})") \
            from None
    return tuple(sorted(names - {"epoch"}))


class ModelCheckpoint(Callback):
    """Save at the end of every epoch or, with ``save_best_only``, of every epoch whose
    ``monitor`` beat the best so far (Keras's ModelCheckpoint).

    ``path`` may hold format fields filled in at each save: ``{epoch}`` (counted from 1, as
    Keras does) and any logged name, e.g. ``"model-{epoch:02d}-{val_loss:.3f}.npz"``.
    ``save="model"`` writes ``model.save`` (read back with :func:`engine.load_model`);
    ``save="checkpoint"`` writes ``trainer.save_checkpoint`` (weights, optimizer state, step
    and shuffling RNG, for ``trainer.load_checkpoint`` to resume exactly). Each file is
    written under a temporary name and renamed into place, so ``path`` never holds a
    partial file; missing directories are created. ``mode`` as in EarlyStopping.
    ``best`` is the best monitored value so far, kept across calls of ``fit`` (as Keras
    keeps it: a later run never replaces a better file with a worse one), and
    ``last_saved`` the last file written.
    """

    main_process_only = True

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto", save="model"):
        self.path = _check_path(path)
        self.monitor = _check_monitor(monitor)
        self.save_best_only = _check_flag(save_best_only, "save_best_only")
        self.mode = _check_mode(mode, monitor)
        self.save = one_of(save, ("model", "checkpoint"), "save")
        self._fields = _format_fields(self.path)
        self.best = -math.inf if self.mode == "max" else math.inf
        self.last_saved = None

    def required_logs(self):
        return ((self.monitor,) if self.save_best_only else ()) + self._fields

    def on_epoch_end(self, epoch, logs=None):
        if self.save_best_only:
            value = logs[self.monitor]
            if not _improved(value, self.best, self.mode):
                return
            self.best = value
        path = self.path.format_map({**logs, "epoch": epoch + 1})
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self.save == "model":
            self.trainer.model.save(path)
        else:
            self.trainer.save_checkpoint(path)
        self.last_saved = path


class CSVLogger(Callback):
    """One row per epoch in a CSV file: the epoch (counted from 0, as Keras writes it and
    ``History.epoch`` holds it), then every logged value, under a header of their names.

    ``append=False`` starts the file afresh when training begins; ``append=True`` adds to
    it, writing the header only when the file is new or empty. The file is opened and
    closed for each row, so every finished epoch is on disk even if training dies later.
    """

    main_process_only = True

    def __init__(self, path, separator=",", append=False):
        self.path = _check_path(path)
        if not isinstance(separator, str):
            raise TypeError(f"separator must be a one-character string; got {type(separator).__name__}")
        if len(separator) != 1:
            raise ValueError(f"separator must be a one-character string; got {separator!r}")
        self.separator = separator
        self.append = _check_flag(append, "append")
        self._write_header = True

    def on_train_begin(self, logs=None):
        if self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            self._write_header = False
        else:
            # Created (or emptied) now, so that a path that cannot be written fails before training.
            open(self.path, "w").close()
            self._write_header = True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter=self.separator)
            if self._write_header:
                writer.writerow(["epoch", *logs])
                self._write_header = False
            writer.writerow([epoch, *logs.values()])


class LambdaCallback(Callback):
    """A callback made of plain functions (Keras's LambdaCallback), e.g.
    ``LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs["loss"]))``.

    Each argument is None or a function taking the arguments of the method it stands for:
    ``(epoch, logs)``, ``(batch, logs)`` or ``(logs)``; ``logs`` is a dict, empty where
    ``fit`` has nothing to log. Only a given ``on_batch_end`` makes ``fit`` read each
    batch's loss from the device.
    """

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_batch_end=None, on_train_begin=None,
                 on_train_end=None):
        hooks = {"on_epoch_begin": (on_epoch_begin, True), "on_epoch_end": (on_epoch_end, True),
                 "on_batch_end": (on_batch_end, True), "on_train_begin": (on_train_begin, False),
                 "on_train_end": (on_train_end, False)}
        for name, (hook, takes_index) in hooks.items():
            if hook is None:
                continue
            if not callable(hook):
                raise TypeError(f"{name} must be a function or None; got {type(hook).__name__}")
            # An instance attribute shadows the class's no-op method (Keras does the same).
            setattr(self, name, _passing_logs(hook, takes_index))


def _passing_logs(hook, takes_index):
    """``hook`` called with a logs dict always: fit calls some methods without one."""
    if takes_index:
        return lambda index, logs=None: hook(index, {} if logs is None else logs)
    return lambda logs=None: hook({} if logs is None else logs)
