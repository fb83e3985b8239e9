"""The training loop: forward, fused loss, backward, clipping and one optimizer kernel per step."""
from __future__ import annotations

import copy
import math
import time

import numpy as np
from tqdm.auto import tqdm

from . import losses as losses_module
from . import metrics as metrics_module
from . import optim
from .callbacks import Callback, History
from .data import batch_slices, split_validation
from .errors import NonFiniteError
from .model import MLP
from .validation import check_features, number, one_of, optional_number

_EVAL_BATCH = 1024  # rows per forward when evaluate() is given no batch_size


class Trainer:
    """Trains ``model`` on ``loss`` with ``optimizer`` (default AdamW()).

    Clipping acts on the loss gradient before the optimizer's decay and momentum:
    ``clip_value`` clamps each element to [-v, v]; ``clip_norm`` rescales each parameter's
    gradient to norm <= c; ``clip_global_norm`` scales all by ``min(1, c / (norm + 1e-6))``
    (torch clip_grad_norm_), applied in that order. A NaN or Inf loss or gradient raises
    :class:`engine.NonFiniteError` with the weights untouched, or skips the step when
    ``on_nonfinite="skip"``.
    """

    def __init__(self, model, loss="cross_entropy", optimizer=None, metrics=("accuracy",), clip_value=None,
                 clip_norm=None, clip_global_norm=None, callbacks=(), on_nonfinite="raise"):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be an engine.MLP; got {type(model).__name__}")
        self.model = model
        self.loss = losses_module.get(loss)
        if self.loss.reduction == "none":
            raise ValueError("loss must reduce to a scalar to train on: use reduction='mean' or 'sum', not 'none'")
        self.optimizer = optim.get(optimizer)
        if isinstance(metrics, str):
            metrics = (metrics,)
        self.metrics = [metrics_module.get(m) for m in metrics]
        self.clip_value = optional_number(clip_value, "clip_value", low=0.0, low_open=True)
        self.clip_norm = optional_number(clip_norm, "clip_norm", low=0.0, low_open=True)
        self.clip_global_norm = optional_number(clip_global_norm, "clip_global_norm", low=0.0, low_open=True)
        self.callbacks = self._check_callbacks(callbacks)
        self.on_nonfinite = one_of(on_nonfinite, ("raise", "skip"), "on_nonfinite")
        self.optimizer.bind(model)
        k, n_segments = model._k, len(model._layout.segments)
        self._sq_norms = k.zeros(n_segments, np.float64)
        self._seg_scale_host = np.ones(n_segments)
        self._seg_scale = k.to_device(self._seg_scale_host, np.float64)
        self._rng = np.random.default_rng(model._seed)
        self._batch_buffers = {}
        self.stop_training = False

    @staticmethod
    def _check_callbacks(callbacks):
        callbacks = list(callbacks)
        for i, c in enumerate(callbacks):
            if not isinstance(c, Callback):
                raise TypeError(f"callbacks[{i}] must be an engine.callbacks.Callback; got {type(c).__name__}")
        return callbacks

    @property
    def step(self):
        """Updates made so far."""
        return self.optimizer.iterations

    # ------------------------------------------------------------------ steps
    def _check_data(self, X, y, x_argument="X", y_argument="y"):
        X = check_features(X, self.model.sizes[0], self.model.dtype, x_argument)
        return X, self.loss.check_targets(y, X.shape[0], self.model.sizes[-1], self.model.dtype, y_argument)

    def train_step(self, xb, yb):
        """One forward, backward and update on a batch; returns the batch loss before the update."""
        X, y = self._check_data(xb, yb, "xb", "yb")
        k = self.model._k
        return self._train_on_device(k.to_device(X, self.model.dtype), k.to_device(y, y.dtype))

    def _train_on_device(self, X, y):
        model, k = self.model, self.model._k
        step = self.optimizer.iterations
        logits = model._forward(X, training=True, step=step)
        loss = self.loss.forward_backward(k, logits, y, model._loss_gradient_buffer(X.shape[0]))
        if not math.isfinite(loss):
            return self._non_finite("loss", loss, step)
        model._backward(X)
        clip_value = math.inf if self.clip_value is None else self.clip_value
        k.grad_sq_norms(model._grads, model._offsets, clip_value, self._sq_norms)
        sq_norms = k.to_host(self._sq_norms)
        if not math.isfinite(float(sq_norms.sum())):
            return self._non_finite("gradient", loss, step)
        if self.clip_norm is not None or self.clip_global_norm is not None:
            self._set_norm_scales(sq_norms)
        self.optimizer.apply(model._params, model._grads, self._seg_scale, clip_value)
        return loss

    def _set_norm_scales(self, sq_norms):
        """Per-parameter then global norm clipping, as one scale per segment."""
        scale = self._seg_scale_host
        for s, sq in enumerate(sq_norms):
            norm = math.sqrt(sq)
            scale[s] = min(1.0, self.clip_norm / norm) if self.clip_norm is not None and norm > 0 else 1.0
        if self.clip_global_norm is not None:
            total = math.sqrt(sum(float(sq) * f * f for sq, f in zip(sq_norms, scale)))
            scale *= min(1.0, self.clip_global_norm / (total + 1e-6))
        self.model._k.copy_into(self._seg_scale, scale)

    def _non_finite(self, what, loss, step):
        if self.on_nonfinite == "skip":
            return loss
        raise NonFiniteError(f"non-finite {what} at step {step} (loss {loss}); the weights and optimizer "
                             "state were left as they were before this step")

    # -------------------------------------------------------------------- fit
    def _gathered(self, X, y, index):
        """The rows ``index`` of X and y, copied into buffers reused across batches."""
        n = len(index)
        if n not in self._batch_buffers:
            self._batch_buffers[n] = (np.empty((n,) + X.shape[1:], X.dtype), np.empty((n,) + y.shape[1:], y.dtype))
        xb, yb = self._batch_buffers[n]
        np.take(X, index, axis=0, out=xb)
        np.take(y, index, axis=0, out=yb)
        return xb, yb

    def fit(self, X, y, epochs=1, batch_size=32, shuffle=True, validation_data=None, validation_split=0.0,
            verbose=1, callbacks=()):
        """Train for ``epochs`` passes over (X, y); returns a History (``history.history``).

        ``verbose``: 0 silent, 1 a progress bar per epoch, 2 one line per epoch.
        """
        X, y = self._check_data(X, y)
        epochs = number(epochs, "epochs", low=0, integer=True)
        batch_size = number(batch_size, "batch_size", low=1, integer=True)
        validation_split = number(validation_split, "validation_split", low=0.0, high=1.0, high_open=True)
        verbose = number(verbose, "verbose", low=0, high=2, integer=True)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (X_val, y_val)")
            validation = self._check_data(*validation_data, "validation_data[0]", "validation_data[1]")
        elif validation_split > 0:
            X, y, *validation = split_validation(X, y, validation_split)
        else:
            validation = None
        history = History()
        callbacks = [history] + self.callbacks + self._check_callbacks(callbacks)
        for c in callbacks:
            c.trainer = self
        self.stop_training = False
        for c in callbacks:
            c.on_train_begin()
        for epoch in range(epochs):
            for c in callbacks:
                c.on_epoch_begin(epoch)
            logs = self._fit_epoch(X, y, batch_size, shuffle, validation, history, callbacks,
                                   f"Epoch {epoch + 1}/{epochs}", verbose)
            if verbose == 2:
                print(f"Epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in logs.items()))
            for c in callbacks:
                c.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for c in callbacks:
            c.on_train_end()
        return history

    def _fit_epoch(self, X, y, batch_size, shuffle, validation, history, callbacks, description, verbose):
        k, dtype = self.model._k, self.model.dtype
        order = self._rng.permutation(len(X)) if shuffle else None
        for m in self.metrics:
            m.reset()
        total, count = 0.0, 0
        slices = batch_slices(len(X), batch_size)
        with tqdm(total=len(slices), desc=description, unit="step", disable=verbose != 1, leave=True,
                  dynamic_ncols=True) as bar:
            for b, (start, stop) in enumerate(slices):
                xb, yb = (X[start:stop], y[start:stop]) if order is None else self._gathered(X, y, order[start:stop])
                began = time.perf_counter()
                loss = self._train_on_device(k.to_device(xb, dtype), k.to_device(yb, yb.dtype))
                history.step_times.append(time.perf_counter() - began)
                total += loss * (stop - start)
                count += stop - start
                if self.metrics:
                    logits = k.to_host(self.model._workspace(stop - start).Y[-1])
                    for m in self.metrics:
                        m.update(yb, logits)
                for c in callbacks:
                    c.on_batch_end(b, {"loss": loss})
                bar.update(1)
                if b % 16 == 0 or b == len(slices) - 1:
                    bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
            logs = {"loss": total / count, **{m.name: m.compute() for m in self.metrics}}
            if validation is not None:
                logs.update({f"val_{name}": value for name, value in self._evaluate_checked(*validation).items()})
            bar.set_postfix({name: f"{value:.4f}" for name, value in logs.items()}, refresh=True)
        return logs

    # --------------------------------------------------------------- evaluate
    def evaluate(self, X, y, batch_size=None):
        """{"loss": ..., <metric>: ...} over all of (X, y), without dropout."""
        X, y = self._check_data(X, y)
        batch_size = _EVAL_BATCH if batch_size is None else number(batch_size, "batch_size", low=1, integer=True)
        return self._evaluate_checked(X, y, batch_size)

    def _evaluate_checked(self, X, y, batch_size=_EVAL_BATCH):
        """evaluate() on data _check_data has already checked and cast."""
        model, k = self.model, self.model._k
        metrics = [copy.deepcopy(m) for m in self.metrics]
        for m in metrics:
            m.reset()
        total, count = 0.0, 0
        for start, stop in batch_slices(len(X), batch_size):
            logits = model._forward(k.to_device(X[start:stop], model.dtype), training=False, step=0)
            yb = y[start:stop]
            batch_total, batch_count = self.loss.sum_and_count(k, logits, k.to_device(yb, yb.dtype), yb)
            total += batch_total
            count += batch_count
            if metrics:
                host_logits = k.to_host(logits)
                for m in metrics:
                    m.update(yb, host_logits)
        if self.loss.reduction == "mean":
            total = total / count if count else float("nan")  # torch: a mean over no kept rows is NaN
        return {"loss": total, **{m.name: m.compute() for m in metrics}}

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path):
        """Weights, optimizer state, step and shuffling RNG: ``load_checkpoint`` resumes exactly."""
        from .io import save_checkpoint
        save_checkpoint(self, path)

    def load_checkpoint(self, path):
        from .io import load_checkpoint
        load_checkpoint(self, path)
