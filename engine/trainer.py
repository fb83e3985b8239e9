"""The training loop: forward, fused loss, backward, then the step's decisions (finite check,
clip scales) and one optimizer kernel, every one a backend op: a step never waits for the host.

The decisions live in a small float64 device array, the record: guard_update's status
(kernels.spec GUARD_*), then train_step's loss slot, the sums of the metrics the device
computes, and a loss slot per batch of fit's epoch. The host reads it in one transfer:
once per train_step, and in fit only at progress-bar updates, for callbacks that look at
batch losses, and at the end of each epoch. A non-finite loss or gradient sets a sticky
flag on the device (the step's number and why), after which every update is a no-op
until the host reads the record: it then raises for exactly that step, with the weights
and optimizer state of before it, and sets the update count back to the updates made.
"""
from __future__ import annotations

import copy
import math
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from kernels import spec

from . import distributed, io
from . import losses as losses_module
from . import metrics as metrics_module
from . import optim
from .callbacks import Callback, History
from .data import EpochBatches, batch_slices, split_validation
from .diagnostics import EpochDiagnostics
from .errors import NonFiniteError
from .interrupts import HeldInterrupt, whole_step
from .augmentation import Augmentation
from .model import MLP
from .regularization import Penalties
from .compiled_steps import CompiledSteps
from .step_graphs import StepGraphs
from .validation import check_features, number, one_of, optional_number

_EVAL_BATCH = 1024  # rows per forward when evaluate() is given no batch_size
_PROGRESS_EVERY = 16  # batches between progress-bar updates (each reads the record)
_CHUNK_SECONDS = 0.2  # the most a compiled run of fit's batches is planned to take
# The kernels a step needs are compiled (or loaded from the disk cache) by the first step
# of its kind in a process: (backend, dtype, activations, loss, optimizer) seen so far.
_STEPS_TAKEN = set()

_STEP_SLOT = spec.GUARD_SIZE  # train_step's loss, right after the status
_METRIC_SUMS = _STEP_SLOT + 1  # then (total, count) per metric, then fit's loss per batch
_CLEAR = np.zeros(spec.GUARD_SIZE)


def _alike(buffers, arrays):
    """Whether ``buffers`` are arrays of the shapes and dtypes of ``arrays``, one each."""
    return len(buffers) == len(arrays) and all(b.shape == a.shape and b.dtype == a.dtype
                                               for b, a in zip(buffers, arrays))


class Trainer:
    """Trains ``model`` on ``loss`` with ``optimizer`` (default AdamW()), reporting
    ``metrics`` (names or engine.metrics objects; by default the loss's
    ``default_metrics``: accuracy for cross_entropy and single-output
    binary_cross_entropy, mae for mse and huber).

    Penalties and constraints (engine.regularization, API.md): ``l2`` adds
    ``l2 / 2 sum ||W||^2`` and ``l1`` adds ``l1 sum |W|`` over the weight matrices of trained
    layers to the loss (the logged loss includes them), their gradients joining the loss
    gradient before clipping; ``l1_update="clipped"`` applies L1 after the optimizer's step
    as ``w -= min(lr l1, |w_old|) sign(w_old)`` (never across zero), ``"proximal"`` as the
    soft-threshold ``w = sign(w) max(|w| - lr l1, 0)`` (exact zeros); ``max_norm=c`` rescales
    each unit's incoming weights (a column of W) to norm at most c after every update
    (Keras MaxNorm).

    Clipping acts on the loss gradient before the optimizer's decay and momentum:
    ``clip_value`` clamps each element to [-v, v]; ``clip_norm`` rescales each parameter's
    gradient to norm <= c; ``clip_global_norm`` scales all by ``min(1, c / (norm + 1e-6))``
    (torch ``clip_grad_norm_``), applied in that order. A NaN or Inf loss or gradient raises
    :class:`engine.NonFiniteError` naming the first such update, with the weights and
    optimizer state as they were before it; or, with ``on_nonfinite="skip"``, that update
    is skipped and not counted. Skipping reads the device's verdict at every step (one
    synchronisation per step on a GPU), since the next update's count depends on it;
    raising does not. Skipped updates are counted in ``skipped_steps`` and, per epoch, in
    fit's log ``"skipped"``. A Ctrl-C stops training at a step boundary
    (:mod:`engine.interrupts`): weights, optimizer state and step count agree, and a
    checkpoint saved then resumes exactly.

    ``data_parallel=True``, in a job of processes started by ``mpirun`` or ``srun`` after
    :func:`engine.distributed.init`: every rank trains the same model on its shard of each
    global batch (``fit``'s ``batch_size`` rows per rank), the gradient summed across ranks
    before the finite check and the clipping, so the ranks keep the same weights; they
    start from rank 0's weights and seed (taken here and at each ``fit``); ``evaluate``
    splits the rows over the ranks; rank 0 alone shows progress, and only it runs the
    callbacks whose ``main_process_only`` is set (the ones that write files) and writes
    checkpoints. ``fit``, ``evaluate`` and ``train_step`` must then be called on every rank
    (see :mod:`engine.distributed`).

    ``compiled_steps``: on the numba backend, run each ``train_step`` and runs of ``fit``'s
    batches as one compiled call where the model and settings allow
    (:mod:`engine.compiled_steps`: the same kernels, the same results bit for bit).
    ``"auto"`` (the default) where that pays: at once where the model's compiled steps
    were compiled before (by any process: they are cached on disk), else once the steps
    run op by op on that model (and those fit plans) come to some 20 s, the cost of
    compiling them once; True always, False never.
    """

    def __init__(self, model, loss="cross_entropy", optimizer=None, metrics=None, clip_value=None,
                 clip_norm=None, clip_global_norm=None, callbacks=(), on_nonfinite="raise",
                 data_parallel=False, l2=0.0, l1=0.0, l1_update="gradient", max_norm=None, compiled_steps="auto"):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be an engine.MLP; got {type(model).__name__}")
        self.model = model
        self.loss = losses_module.get(loss)
        if self.loss.reduction == "none":
            raise ValueError("loss must reduce to a scalar to train on: use reduction='mean' or 'sum', not 'none'")
        self.optimizer = optim.get(optimizer)
        if metrics is None:  # what means something for the loss: accuracy, or mae for a regression
            metrics = self.loss.default_metrics(model.sizes[-1])
        if isinstance(metrics, str):
            metrics = (metrics,)
        self.metrics = [metrics_module.get(m) for m in metrics]
        self.clip_value = optional_number(clip_value, "clip_value", low=0.0, low_open=True)
        self.clip_norm = optional_number(clip_norm, "clip_norm", low=0.0, low_open=True)
        self.clip_global_norm = optional_number(clip_global_norm, "clip_global_norm", low=0.0, low_open=True)
        self.callbacks = self._check_callbacks(callbacks)
        self.on_nonfinite = one_of(on_nonfinite, ("raise", "skip"), "on_nonfinite")
        self.penalties = Penalties(l2, l1, l1_update, max_norm)
        if not isinstance(data_parallel, bool):
            raise TypeError(f"data_parallel must be True or False; got {type(data_parallel).__name__}")
        self.optimizer.bind(model)
        self._parallel = distributed.DataParallel(model) if data_parallel else None  # before the seed is read
        k, n_segments = model._k, len(model._layout.trained)
        self._sq_norms = k.zeros(n_segments, np.float64)
        self._seg_scale = k.to_device(np.ones(n_segments), np.float64)
        self._record = None
        self._reserve(0)
        self._epoch_losses = None  # (first update, slots) of the epoch fit is running
        self._rng = np.random.default_rng(model._seed)
        self._batch_buffers = {}
        self._graphs = StepGraphs(self)
        if not (isinstance(compiled_steps, bool) or compiled_steps == "auto"):
            raise TypeError(f"compiled_steps must be True, False or 'auto'; got {compiled_steps!r}")
        self._compiled_steps = CompiledSteps(self, compiled_steps)
        self._diagnostics = None  # fit's EpochDiagnostics while it runs with diagnostics=True
        self.stop_training = False
        self.skipped_steps = 0  # updates on_nonfinite="skip" left out, over the Trainer's life

    @staticmethod
    def _check_callbacks(callbacks):
        """A list of Callbacks from ``callbacks``: an iterable of them, or one (Keras needs a
        list; one alone is read as a list of one)."""
        if isinstance(callbacks, Callback):
            return [callbacks]
        try:
            callbacks = list(callbacks)
        except TypeError:
            raise TypeError("callbacks must be an engine.callbacks.Callback or a list of them; "
                            f"got {type(callbacks).__name__}") from None
        for i, c in enumerate(callbacks):
            if not isinstance(c, Callback):
                raise TypeError(f"callbacks[{i}] must be an engine.callbacks.Callback; got {type(c).__name__}")
        return callbacks

    @property
    def is_main_process(self):
        """Whether this process shows progress and writes files: rank 0 under
        ``data_parallel=True``, else always."""
        return self._parallel is None or self._parallel.is_main

    @property
    def step(self):
        """Updates made so far."""
        return self.optimizer.iterations

    # ----------------------------------------------------------------- record
    def _reserve(self, size):
        """The device record with at least ``size`` values after train_step's loss slot (a
        larger one, the status carried over, when it is too small)."""
        k = self.model._k
        if self._record is None or self._record.size < _METRIC_SUMS + size:
            record = k.zeros(_METRIC_SUMS + size, np.float64)
            if self._record is not None:
                k.copy_into(record[:_METRIC_SUMS], self._record[:_METRIC_SUMS])
            self._record = record
            self._status = record[:spec.GUARD_SIZE]
            self._step_total = record[_STEP_SLOT:_STEP_SLOT + 1]
            self._head = record[:_METRIC_SUMS]
        return self._record

    def _raise_recorded(self, host, losses, first_step):
        """If the record read into ``host`` names a non-finite update, clear the record,
        count only the updates before it and raise NonFiniteError naming it (its loss is
        ``losses[step - first_step]``)."""
        bad = int(host[spec.GUARD_BAD_STEP])
        if not bad:
            return
        step, reason = bad - 1, host[spec.GUARD_REASON]
        loss = float(losses[step - first_step]) if 0 <= step - first_step < len(losses) else float("nan")
        self.model._k.copy_into(self._status, _CLEAR)
        self.optimizer._rewind(step)
        what = "loss" if reason == spec.REASON_LOSS else "gradient"
        raise NonFiniteError(f"non-finite {what} at step {step} (loss {loss}); the weights and optimizer "
                             "state were left as they were before this step")

    # ------------------------------------------------------------------ steps
    def _check_data(self, X, y, x_argument="X", y_argument="y"):
        X = check_features(X, self.model.sizes[0], self.model.dtype, x_argument, self.model._k.all_finite)
        return X, self.loss.check_targets(y, X.shape[0], self.model.sizes[-1], self.model.dtype, y_argument)

    @distributed.collective
    def train_step(self, xb, yb):
        """One forward, backward and update on a batch; returns the batch loss before the
        update. Under ``data_parallel=True`` each rank's batch is its shard of one made of
        every rank's rows, in rank order."""
        X, y = self._check_data(xb, yb, "xb", "yb")
        if len(X) < self.model.min_training_rows:
            raise ValueError(f"xb: batch norm trains on batches of at least {self.model.min_training_rows} rows; "
                             f"got {len(X)}")
        shard = None
        if self._parallel is not None:
            self._parallel.agree(self._shared_settings(0, None))
            shard = self._parallel.own_batch(len(X), self.loss.reduction)
        k = self.model._k
        X, y = k.to_device(X, self.model.dtype), k.to_device(y, y.dtype)
        compiled = self._compiled_steps
        stack = None if shard is not None else compiled.stack(X, y)
        if stack is not None and compiled.ready(stack, len(X)):  # one call, which a Ctrl-C cannot cut
            first_step = self.optimizer.iterations
            compiled.run(stack, X, y, None, np.array([0, len(X)]), _STEP_SLOT)
            return self._step_result(first_step)
        began = time.perf_counter()
        loss = self._train_on_device(X, y, shard)
        if stack is not None:
            compiled.ran_op_by_op(stack, len(X), time.perf_counter() - began)
        return loss

    def _check_batch_rows(self, n_rows, batch_size):
        """ValueError, before any update, when fit would cut a batch too small for a layer to
        train on (batch norm needs 2 rows): a last batch of ``n_rows % batch_size`` rows."""
        needed = self.model.min_training_rows
        smallest = min(batch_size, n_rows % batch_size or batch_size, n_rows)
        if smallest < needed:
            raise ValueError(f"batch_size={batch_size} leaves a last batch of {smallest} row"
                             f"{'' if smallest == 1 else 's'} of the {n_rows} training rows, and batch norm "
                             f"trains on batches of at least {needed} rows: choose another batch_size")

    def _limits(self):
        """(clip_value, clip_norm, clip_global_norm) as the kernels take them: inf where unset."""
        return (math.inf if self.clip_value is None else self.clip_value,
                math.inf if self.clip_norm is None else self.clip_norm,
                math.inf if self.clip_global_norm is None else self.clip_global_norm)

    def _shared_settings(self, n_rows, batch_size):
        """What every data-parallel rank must share to train together (see distributed.agree)."""
        return {"model": self.model.config(), "backend": self.model.backend, "loss": self.loss.config(),
                "optimizer": type(self.optimizer).__name__, "step": self.optimizer.iterations,
                "rows": n_rows, "batch_size": batch_size}

    @whole_step
    def _train_on_device(self, X, y, shard=None):
        first_step = self.optimizer.iterations
        self._step(X, y, self._step_total, shard)
        return self._step_result(first_step)

    def _step_result(self, first_step):
        """train_step's loss, read from the record, after raising for a non-finite update."""
        head = self.model._k.to_host(self._head)  # the one wait of a train_step
        loss = float(head[_STEP_SLOT])
        self._raise_recorded(head, head[_STEP_SLOT:], first_step)
        return loss

    def _step(self, X, y, total, shard=None, weights=None):
        """Forward, loss into the device slot ``total``, backward, guard and update, all
        queued on the device; returns the logits. ``weights``: the batch's (N,) row weights
        of the loss, or None. Only on_nonfinite="skip" waits, for the
        verdict: a skipped update must not be counted, and the next one's count (Adam's
        bias correction, lr schedules, dropout keys) depends on it. ``shard``: a data-
        parallel rank's distributed.Shard of the global batch (never replayed: its step
        all-reduces between the backward and the norms)."""
        model, k, optimizer, diagnostics = self.model, self.model._k, self.optimizer, self._diagnostics
        step = optimizer.iterations
        logits = self._graphs.forward_backward(X, y, total, weights) if shard is None \
            else self._forward_backward(X, y, total, shard, weights)
        clip_value, clip_norm, clip_global_norm = self._limits()
        raising = self.on_nonfinite == "raise"
        k.guard_update(total, self._sq_norms, clip_norm, clip_global_norm, step, raising, self._seg_scale,
                       self._status)
        if not raising and k.to_host(self._status)[spec.GUARD_SKIP]:
            self.skipped_steps += 1
        else:
            penalties = self.penalties
            if penalties.l1 > 0.0 and penalties.l1_rule != spec.L1_GRADIENT:
                optimizer.set_l1(penalties.coefficients(model)[0], penalties.l1_rule)
            optimizer.apply(model._params, model._grads, self._seg_scale, clip_value, self._status,
                            diagnostics and diagnostics.update_sums)
            if penalties.max_norm is not None:
                model._constrain_max_norm(penalties.max_norm, self._status)
        return logits

    def _forward_backward(self, X, y, total, shard=None, weights=None):
        """The part of a step with the same arguments at every step of a batch shape, which
        a GPU replays as one graph (engine.step_graphs): forward, loss (row ``weights``, or
        None) into ``total``, backward, and the squared gradient norms; returns the logits.
        With a data-parallel ``shard``, the gradient and loss summed over ranks before the
        norms."""
        model, k, diagnostics = self.model, self.model._k, self._diagnostics
        logits = model._forward(X, training=True, step=self.optimizer.iterations,
                                alive=diagnostics and diagnostics.alive, first_row=shard.first_row if shard else 0)
        self.loss.forward_backward(k, logits, y, model._loss_gradient_buffer(X.shape[0]), total, weights)
        model._backward(X)
        if shard is not None:
            self._parallel.reduce_step(model._grads, total, shard.weight)
        penalties = self.penalties
        seg_l1, seg_l2 = penalties.coefficients(model) if penalties.active else (None, None)
        k.grad_sq_norms(model._grads, model._offsets, self._limits()[0],
                        self._sq_norms, diagnostics and diagnostics.grad_sums,
                        model._params if penalties.active else None, seg_l1, seg_l2,
                        penalties.l1_rule == spec.L1_GRADIENT, total if penalties.active else None)
        return logits

    def _graph_inputs(self, *batch):
        """Device buffers shaped like the ``batch`` arrays (X, y and, if any, the row
        weights) for a recorded step to read: fit's shuffled-batch buffers of that size (so
        that fit's gathered batches need no copy), or new ones."""
        buffers = self._batch_buffers.get(batch[0].shape[0])
        if buffers is not None and _alike(buffers, batch):
            return buffers
        k = self.model._k
        return tuple(k.empty(a.shape, a.dtype) for a in batch)

    # -------------------------------------------------------------------- fit
    def _batch(self, arrays, order, start, stop):
        """Rows start:stop of each of the data set's device ``arrays`` (X, y and, if any,
        the row weights); when shuffling, rows ``order[start:stop]`` (a device permutation)
        gathered on the device into buffers reused across batches."""
        if order is None:
            return tuple(a[start:stop] for a in arrays)
        buffers = self._gather_buffers(arrays, stop - start)
        index = order[start:stop]
        for a, into in zip(arrays, buffers):
            self.model._k.take_rows(a, index, into)
        return buffers

    def _gather_buffers(self, arrays, n):
        """Device buffers of ``n`` rows shaped like the rows of each of ``arrays``, kept from
        batch to batch (shuffled batches are gathered into them)."""
        buffers = self._batch_buffers.get(n)
        if buffers is None or not _alike(buffers, [a[:n] for a in arrays]):
            k = self.model._k
            buffers = self._batch_buffers[n] = tuple(k.empty((n,) + a.shape[1:], a.dtype) for a in arrays)
        return buffers

    @staticmethod
    def _split_metrics(metrics, y):
        """([(index, kind, threshold)] of the metrics the backend's metric_sums computes for
        targets like ``y``, [the others, updated on the host])."""
        device, host = [], []
        for i, m in enumerate(metrics):
            kind = m.device_kind(y)
            if kind is None:
                host.append(m)
            else:
                device.append((i, *kind))
        return device, host

    @distributed.collective
    def fit(self, X, y, epochs=1, batch_size=32, shuffle=True, validation_data=None, validation_split=0.0,
            verbose=1, callbacks=(), diagnostics=False, input_noise=0.0, mixup=0.0, class_weight=None,
            sample_weight=None):
        """Train for ``epochs`` passes over (X, y); returns a History (``history.history``).

        ``verbose``: 0 silent, 1 a progress bar per epoch, 2 one line per epoch; both on
        stdout, as Keras prints them, so that they stay in order with what callbacks and
        the caller print. ``callbacks`` (one or a list) run after the Trainer's own; any
        name a callback monitors must be one fit logs, which is checked before training.
        Each epoch logs ``loss``, the metrics, their ``val_`` values with validation, and
        ``lr``: the learning rate of the epoch's last update.

        ``diagnostics=True`` also logs, per hidden layer i (from 1), ``grad_norm/i``,
        ``update_ratio/i`` and, for ReLU layers, ``dead/i`` (:mod:`engine.diagnostics`),
        computed inside the step's kernels; the progress bar shows their mean update ratio.

        Augmentation and row weights (:mod:`engine.augmentation`), training batches only:
        ``input_noise=s`` adds ``N(0, s^2)`` noise to the inputs, fresh at every update
        from the counter-based RNG (reproducible by the model's seed); ``mixup=a`` trains
        on ``lam x + (1 - lam) x[perm]``, ``lam ~ Beta(a, a)`` and ``perm`` a permutation
        of the batch drawn per batch from the trainer's RNG, the targets mixed alike
        (class targets become distributions; refused with the loss's ``ignore_index`` and
        under ``data_parallel``), the training metrics then scored against the batch's
        dominant labels (``y`` for ``lam >= 0.5``, else ``y[perm]``). ``class_weight``
        (dict class -> weight >= 0, classes unnamed weigh 1; the classes are class indices,
        or one sigmoid output's labels ``t > 0.5``) and ``sample_weight`` ((N,) >= 0, one
        per row of X, split as X by ``validation_split``) weight each row's loss, the
        product of both when both are given (Keras semantics: the sum of ``w_i loss_i``
        divided by the rows, as unweighted); evaluation and validation are unweighted.
        """
        X, y = self._check_data(X, y)
        epochs = number(epochs, "epochs", low=0, integer=True)
        batch_size = number(batch_size, "batch_size", low=1, integer=True)
        validation_split = number(validation_split, "validation_split", low=0.0, high=1.0, high_open=True)
        verbose = number(verbose, "verbose", low=0, high=2, integer=True)
        if not isinstance(diagnostics, bool):
            raise TypeError(f"diagnostics must be True or False; got {type(diagnostics).__name__}")
        augmentation = Augmentation(self, X, y, input_noise, mixup, class_weight, sample_weight)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (X_val, y_val)")
            validation = self._check_data(*validation_data, "validation_data[0]", "validation_data[1]")
        elif validation_split > 0:
            X, y, *validation = split_validation(X, y, validation_split)
            augmentation.training_rows(len(X))
        else:
            validation = None
        self._check_batch_rows(len(X), batch_size)
        # The data set goes to the device once per fit (no copy on the CPU backends);
        # batches are cut or gathered there.
        k = self.model._k
        on_device = (k.to_device(X, self.model.dtype), k.to_device(y, y.dtype)) + \
            (() if augmentation.weights is None else (k.to_device(augmentation.weights, self.model.dtype),))
        # The global batches: batch_size rows per rank, each rank computing on its shard.
        batches = EpochBatches.over(len(X), batch_size * (1 if self._parallel is None else self._parallel.size))
        history = History()
        callbacks = [history] + self.callbacks + self._check_callbacks(callbacks)
        self._diagnostics = EpochDiagnostics(self.model) if diagnostics else None
        try:
            self._check_monitored(callbacks, validation is not None)
        except ValueError:
            self._diagnostics = None  # train_step after a refused fit keeps no diagnostics
            raise
        if self._parallel is not None:
            self._parallel.agree({**self._shared_settings(len(X), batch_size), "epochs": epochs, "shuffle": shuffle,
                                  "validation_rows": None if validation is None else len(validation[0]),
                                  "augmentation": augmentation.settings(),
                                  "callbacks": [type(c).__name__ for c in callbacks if not c.main_process_only]})
            self._parallel.broadcast_weights(self.model)
            callbacks = [c for c in callbacks if self.is_main_process or not c.main_process_only]
        for c in callbacks:
            c.trainer = self
        self.stop_training = False
        for c in callbacks:
            c.on_train_begin()
        try:
            with HeldInterrupt() as self._interrupt:  # Ctrl-C raises at the next step boundary
                for epoch in range(epochs):
                    for c in callbacks:
                        c.on_epoch_begin(epoch)
                    logs = self._fit_epoch(X, y, on_device, batches, shuffle, validation, history, callbacks,
                                           f"Epoch {epoch + 1}/{epochs}", verbose, augmentation)
                    if verbose == 2 and self.is_main_process:
                        print(f"Epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in logs.items()))
                    for c in callbacks:
                        c.on_epoch_end(epoch, logs)
                    if self.stop_training:
                        break
        except NonFiniteError:
            raise
        except BaseException as error:
            # An error (a callback's, an lr schedule's past a bad update, an interrupt) may come
            # before the record was read: a non-finite update in it comes first.
            if self._epoch_losses is not None:
                first_step, slots = self._epoch_losses
                host = self.model._k.to_host(self._record)
                try:
                    self._raise_recorded(host, host[slots], first_step)
                except NonFiniteError as non_finite:
                    raise non_finite from error
            raise
        finally:
            self._epoch_losses = None
            self._diagnostics = None
        for c in callbacks:
            c.on_train_end()
        return history

    def _logged_names(self, validation):
        """The names each epoch's logs will hold (see the end of _fit_epoch)."""
        names = ["loss", *(m.name for m in self.metrics)]
        diagnostics = self._diagnostics.names() if self._diagnostics is not None else []
        skipped = ["skipped"] if self.on_nonfinite == "skip" else []
        return names + ([f"val_{name}" for name in names] if validation else []) + ["lr"] + skipped + diagnostics

    def _check_monitored(self, callbacks, validation):
        """Fail before the first epoch, not after it, when a callback monitors a name fit
        will not log."""
        logged = self._logged_names(validation)
        for c in callbacks:
            missing = [name for name in c.required_logs() if name not in logged]
            if missing:
                hint = " (val_* names need validation_data or validation_split)" \
                    if any(name.startswith("val_") for name in missing) else ""
                raise ValueError(f"{type(c).__name__} monitors {', '.join(map(repr, missing))}, which fit will not "
                                 f"log; it logs {', '.join(map(repr, logged))}{hint}")

    def _fit_epoch(self, X, y, on_device, batches, shuffle, validation, history, callbacks, description,
                   verbose, augmentation):
        k = self.model._k
        order = self._rng.permutation(len(X)) if shuffle else None
        order_device = None if order is None else k.to_device(order, np.int64)
        for m in self.metrics:
            m.reset()
        if self._diagnostics is not None:
            self._diagnostics.reset()
        device_metrics, host_metrics = self._split_metrics(self.metrics, y)
        slices, sizes = batches.slices, batches.sizes
        n_sums = 2 * len(self.metrics)
        record = self._reserve(n_sums + len(slices))
        if n_sums:
            k.copy_into(record[_METRIC_SUMS:_METRIC_SUMS + n_sums], np.zeros(n_sums))
        metric_sums = [(kind, threshold, record[_METRIC_SUMS + 2 * i:_METRIC_SUMS + 2 * i + 2])
                       for i, kind, threshold in device_metrics]
        first_slot = _METRIC_SUMS + n_sums
        first_step, first_skipped = self.optimizer.iterations, self.skipped_steps
        self._epoch_losses = (first_step, slice(first_slot, first_slot + len(slices)))
        batch_callbacks = [c for c in callbacks if c._reads_batches()]
        last = len(slices) - 1

        def read(n_batches):
            """(the losses of the first n_batches, the record) on the host, after the check."""
            host = k.to_host(record[:first_slot + n_batches])
            losses = host[first_slot:first_slot + n_batches]
            self._raise_recorded(host, losses, first_step)
            return losses, host

        # verbose is the same on every rank, so that all read the record at the same steps.
        with tqdm(total=len(slices), desc=description, unit="step", disable=verbose != 1 or not self.is_main_process,
                  leave=True,
                  dynamic_ncols=True, file=sys.stdout) as bar:
            compiling = self._kind_of_step() not in _STEPS_TAKEN
            if compiling:
                bar.set_description(f"{description} (compiling kernels)")
            # Runs of batches as one compiled call where the step allows (engine.compiled_steps).
            stack, compiled = None, self._compiled_steps
            if not (host_metrics or batch_callbacks or augmentation.mixup or len(on_device) > 2 or self._parallel):
                stack = compiled.stack(*on_device, [(kind, threshold) for _, kind, threshold in device_metrics],
                                       augmentation.input_noise)
            metric_slots = np.array([_METRIC_SUMS + 2 * i for i, _, _ in device_metrics], np.int64)
            b, op_by_op = 0, 0.0  # the time of the last step run op by op
            while b < len(slices):
                warm = stack is not None and compiled.ready(stack, _rows(slices[b]), (len(slices) - b) * op_by_op)
                if warm:  # one batch alone after compiling, then about a chunk's time
                    per_batch = compiled.seconds_per_batch(stack, _rows(slices[b]))
                    n = 1 if per_batch is None else _chunk(per_batch, len(slices) - b)
                    if n > 1 and not compiled.warm(stack, _rows(slices[-1])):  # only the last batch's size can differ
                        n = min(n, len(slices) - 1 - b)
                    bounds = batches.edges[b:b + n + 1]
                    began = time.perf_counter()
                    compiled.run(stack, *on_device, order_device, bounds, first_slot + b, metric_slots)
                    seconds = (time.perf_counter() - began) / n
                    history.step_times.extend([seconds] * n)
                    # A run that compiled is no measure: the next, one batch, measures.
                    compiled.timed(stack, _rows(slices[b]), None if compiling else seconds)
                    self._interrupt.check()
                else:
                    n = 1
                    start, stop = slices[b]
                    shard = None if self._parallel is None else self._parallel.shard(start, stop, self.loss.reduction)
                    if shard is not None:
                        start, stop = shard.start, shard.stop
                    x_device, y_device, *weights = self._batch(on_device, order_device, start, stop)
                    began = time.perf_counter()
                    x_device, y_step, weights, y_device, mixed = augmentation.batch(
                        x_device, y_device, weights[0] if weights else None, self.optimizer.iterations,
                        0 if shard is None else shard.first_row)
                    logits = self._step(x_device, y_step, record[first_slot + b:first_slot + b + 1], shard,
                                        weights)
                    op_by_op = time.perf_counter() - began
                    history.step_times.append(op_by_op)
                    self._interrupt.check()
                    owned = stop - start if shard is None else shard.owned
                    for kind, threshold, into in metric_sums if owned else ():
                        k.metric_sums(kind, threshold, logits, y_device, into)
                    if host_metrics:
                        host_logits = k.to_host(logits)[:owned]
                        yb = (y[start:stop] if order is None else y[order[start:stop]])[:owned]
                        if mixed is not None:  # mixup's dominant labels (engine.augmentation)
                            yb = yb[mixed]
                        if shard is not None:
                            yb, host_logits = self._parallel.gather_rows(yb, host_logits)
                        for m in host_metrics:
                            m.update(yb, host_logits)
                    if batch_callbacks:
                        loss = float(read(b + 1)[0][b])
                        for c in batch_callbacks:
                            c.on_batch_end(b, {"loss": loss})
                    if stack is not None:
                        compiled.ran_op_by_op(stack, stop - start, op_by_op)
                b += n
                # The kernels compiled, and the compiled steps where the next batch compiles none
                if compiling and (stack is None or warm or b == len(slices)
                                  or not compiled.ready(stack, _rows(slices[b]), (len(slices) - b) * op_by_op)):
                    compiling = self._compiled(bar, description)
                bar.update(n)
                if verbose == 1 and (stack is not None or (b - 1) % _PROGRESS_EVERY == 0 or b == len(slices)):
                    losses, _ = read(b)
                    bar.set_postfix(loss=f"{np.dot(losses, sizes[:b]) / sizes[:b].sum():.4f}", refresh=False)
            losses, host = read(len(slices))
            self._epoch_losses = None
            sums = host[_METRIC_SUMS:first_slot]
            if self._parallel is not None:  # the device metrics' sums over every rank's shards
                sums = self._parallel.sum_on_host(sums)
            for i, _, _ in device_metrics:
                self.metrics[i].absorb(sums[2 * i], sums[2 * i + 1])
            logs = {"loss": float(np.dot(losses, sizes) / sizes.sum()),
                    **{m.name: m.compute() for m in self.metrics}}
            if validation is not None:
                logs.update({f"val_{name}": value for name, value in self._evaluate_checked(*validation).items()})
            # The rate of the last update made (of the next one before any): what a schedule
            # or ReduceLROnPlateau set for this epoch. Kept by the optimizer, so that a
            # schedule is called once per update and never again for the log.
            last = self.optimizer.last_lr
            logs["lr"] = self.optimizer.learning_rate() if last is None else last
            if self.on_nonfinite == "skip":  # the epoch's updates left out for a NaN or Inf
                logs["skipped"] = self.skipped_steps - first_skipped
            postfix = {} if bar.disable else {name: f"{value:.4f}" for name, value in logs.items()}
            if self._diagnostics is not None:  # per-layer values to the history, their summary to the bar
                diagnostics = self._diagnostics.logs(len(slices))
                logs.update(diagnostics)
                postfix.update(EpochDiagnostics.postfix(diagnostics))
            if not bar.disable:
                bar.set_postfix(postfix, refresh=True)
        return logs

    def _kind_of_step(self):
        model = self.model
        return (model.backend, model.dtype, tuple(a.name for a in model.activations), self.loss.name,
                type(self.optimizer).__name__, self._diagnostics is not None)

    def _compiled(self, bar, description):
        """After the first step of its kind, before the bar counts it: the description
        back, and the bar's clock restarted, so that its rate and ETA never count the
        compilation as step time."""
        _STEPS_TAKEN.add(self._kind_of_step())
        bar.set_description(description, refresh=False)
        bar.reset(total=bar.total)
        return False

    # --------------------------------------------------------------- evaluate
    @distributed.collective
    def evaluate(self, X, y, batch_size=None):
        """{"loss": ..., <metric>: ...} over all of (X, y), without dropout. Under
        ``data_parallel=True`` every rank passes all the rows and evaluates its share of
        each batch (``batch_size`` rows per rank), the sums added over ranks."""
        X, y = self._check_data(X, y)
        batch_size = _EVAL_BATCH if batch_size is None else number(batch_size, "batch_size", low=1, integer=True)
        if self._parallel is not None:
            self._parallel.agree(self._shared_settings(len(X), batch_size))
        return self._evaluate_checked(X, y, batch_size)

    def _evaluate_checked(self, X, y, batch_size=_EVAL_BATCH):
        """evaluate() on data _check_data has already checked and cast: per-batch loss sums
        and device metrics into a device array, read once at the end."""
        model, k = self.model, self.model._k
        metrics = [copy.deepcopy(m) for m in self.metrics]
        for m in metrics:
            m.reset()
        device_metrics, host_metrics = self._split_metrics(metrics, y)
        parallel = self._parallel
        slices = batch_slices(len(X), batch_size * (1 if parallel is None else parallel.size))
        n_sums = 2 * len(device_metrics)
        sums = k.zeros(n_sums + len(slices), np.float64)
        metric_sums = [(kind, threshold, sums[2 * j:2 * j + 2])
                       for j, (_, kind, threshold) in enumerate(device_metrics)]
        count = 0
        for b, (start, stop) in enumerate(slices):
            if parallel is not None:  # this rank's share of the batch (of a short last one, maybe none)
                start, stop = distributed.split(start, stop, parallel.rank, parallel.size)
            yb, host_logits = y[start:stop], np.empty((0, model.sizes[-1]), model.dtype)
            if stop > start:
                logits = model._forward(k.to_device(X[start:stop], model.dtype), training=False, step=0)
                y_device = k.to_device(yb, yb.dtype)
                count += self.loss.sum_and_count(k, logits, y_device, yb, sums[n_sums + b:n_sums + b + 1])[1]
                for kind, threshold, into in metric_sums:
                    k.metric_sums(kind, threshold, logits, y_device, into)
                if host_metrics:
                    host_logits = k.to_host(logits)
            if host_metrics:
                if parallel is not None:
                    yb, host_logits = parallel.gather_rows(yb, host_logits)
                for m in host_metrics:
                    m.update(yb, host_logits)
        host = k.to_host(sums)
        host = np.concatenate([host[:n_sums], [host[n_sums:].sum(), count]])
        if parallel is not None:
            host = parallel.sum_on_host(host)
        for j, (i, _, _) in enumerate(device_metrics):
            metrics[i].absorb(host[2 * j], host[2 * j + 1])
        total, count = float(host[n_sums]), float(host[n_sums + 1])
        if self.loss.reduction == "mean":
            total = total / count if count else float("nan")  # torch: a mean over no kept rows is NaN
        return {"loss": total, **{m.name: m.compute() for m in metrics}}

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path):
        """Weights, optimizer state, step and shuffling RNG: ``load_checkpoint`` resumes exactly.
        Under ``data_parallel=True`` only rank 0 writes (every rank holds the same state)."""
        if not self.is_main_process:
            return
        model, opt = self.model, self.optimizer
        state = opt.state_dict()
        meta = {"config": model.config(), "seed": model._seed, "optimizer": type(opt).__name__,
                "iterations": state["iterations"], "scalars": state["scalars"], "rng": self._rng.bit_generator.state}
        arrays = {"params": model._k.to_host(model._params)}
        if model._layout.state_size:  # running statistics
            arrays["state"] = model._k.to_host(model._state)
        arrays.update({f"opt_{name}": a for name, a in state["arrays"].items()})
        io.write(path, "checkpoint", meta, arrays)

    def load_checkpoint(self, path):
        """Restore a checkpoint of this trainer's architecture and optimizer, all or nothing:
        every value is checked before anything is written."""
        meta, arrays = io.read(path, "checkpoint")
        model, opt = self.model, self.optimizer

        def bad(why):
            return io.bad_file(path, "checkpoint", why)

        saved, current = io.model_config(meta, path, "checkpoint"), model.config()
        saved.setdefault("normalization", [None] * (len(current["sizes"]) - 2))  # written before normalization
        for key in ("sizes", "activation", "dropout", "normalization", "dtype"):
            if key not in saved:
                raise bad(f"its configuration has no {key!r}")
            if saved[key] != current[key]:
                raise ValueError(f"checkpoint {key} {saved[key]!r} does not match the model's {current[key]!r}")
        if meta.get("optimizer") != type(opt).__name__:
            raise ValueError(f"checkpoint optimizer {meta.get('optimizer')} does not match the trainer's "
                             f"{type(opt).__name__}")
        state = opt.state_dict()
        if "params" in arrays and arrays["params"].shape != (model.num_parameters,):
            raise ValueError(f"checkpoint has {arrays['params'].size} parameters; the model has {model.num_parameters}")
        expected = {"params": (model.num_parameters,), **{f"opt_{name}": a.shape for name, a in state["arrays"].items()}}
        if model._layout.state_size:
            expected["state"] = (model._layout.state_size,)
        io.check_arrays(arrays, expected, bad)
        _check_counters(meta, state, bad)
        try:  # on a scratch generator of the same kind, so that a bad state changes nothing
            getattr(np.random, type(self._rng.bit_generator).__name__)().state = meta["rng"]
        except (KeyError, TypeError, ValueError, OverflowError):
            raise bad("its shuffling RNG state is missing or not valid") from None
        opt.load_state_dict({"iterations": meta["iterations"], "scalars": meta["scalars"],
                             "arrays": {name[4:]: a for name, a in arrays.items() if name.startswith("opt_")}})
        model._k.copy_into(model._params, arrays["params"])
        if "state" in expected:
            model._k.copy_into(model._state, arrays["state"])
        model._seed = int(meta["seed"])
        self._rng.bit_generator.state = meta["rng"]


def _rows(bounds):
    start, stop = bounds
    return stop - start


def _chunk(per_batch, remaining):
    """Batches of fit's next compiled run: about _CHUNK_SECONDS of them (a Ctrl-C and the
    progress bar wait for a run's end; tqdm itself redraws at most every 0.1 s)."""
    return max(1, min(remaining, int(_CHUNK_SECONDS / max(per_batch, 1e-9))))


def _check_counters(meta, state, bad):
    """A checkpoint's step count, seed and optimizer scalar state: numbers of the right kind."""
    for name in ("iterations", "seed"):
        value = meta.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise bad(f"its {name!r} is {value!r}, not an integer in [0, 2**63)")
    scalars = meta.get("scalars")
    if not isinstance(scalars, dict) or set(scalars) != set(state["scalars"]):
        raise bad(f"its optimizer scalars are {scalars!r}; this optimizer has {sorted(state['scalars'])}")
    for name, value in scalars.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad(f"its optimizer scalar {name!r} is {value!r}, not a finite number")
