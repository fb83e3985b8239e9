"""fit's augmentation and row weights (../shared/API.md, "Augmentation (fit arguments)").

The arguments are checked before any update. The row weights of the whole training set
are computed on the host once per fit and go to the device with the data set; batches of
them are cut or gathered as the targets are (Trainer._batch). Per training batch, before
the step (whose recorded part, engine.step_graphs, then reads what these ops wrote), in
this order:

* ``mixup=a``: ``lam ~ Beta(a, a)`` and ``perm``, a permutation of the batch's rows, drawn
  on the host from the trainer's RNG (reproducible by seed); the step trains on
  ``lam x + (1 - lam) x[perm]`` (kernels.spec mix_rows), on class targets as the
  distributions ``lam onehot(y) + (1 - lam) onehot(y[perm])`` (mix_class_targets), float
  targets and row weights mixed as the inputs. Training metrics compare the predictions
  with the batch's dominant labels, ``y`` where ``lam >= 0.5`` else ``y[perm]``;
* ``input_noise=s``: ``x + s z`` (gaussian_noise), ``z`` standard normal from the
  counter-based RNG under ``noise_key(seed, update)``, a data-parallel shard drawing the
  rows of the whole batch it holds (offset_key): fresh at each update, reproducible by
  seed, never at evaluation or predict;
* the row weights ``w_i = class_weight[c_i] * sample_weight_i`` go to the loss, which
  sums ``w_i loss_i`` and divides by the rows as unweighted (Keras semantics).

Every op writes into a buffer of the batch's size, never into the data set (without
shuffling, a batch is a view of it).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from kernels.rng import noise_key, offset_key

from .losses import BinaryCrossEntropy, SoftmaxCrossEntropy
from .validation import as_float_array, number


def _rate(value, argument):
    """A finite number >= 0 (0: the feature is off)."""
    return number(value, argument, low=0.0, high=math.inf, high_open=True)


def _classes(loss, y, n_out):
    """(c, C): each row's class for ``class_weight`` and the number of classes: class
    indices as they are; one sigmoid output's label ``t > 0.5`` (C = 2), as the accuracy
    reads it. ValueError for targets that name no class."""
    if isinstance(loss, SoftmaxCrossEntropy) and y.ndim == 1:
        return y, n_out
    if isinstance(loss, BinaryCrossEntropy) and n_out == 1:
        return (y[:, 0] > 0.5).astype(np.int64), 2
    raise ValueError(f"class_weight needs class targets: class indices for cross_entropy, or one output's 0/1 "
                     f"labels for binary_cross_entropy; the loss is {loss.name} with targets of shape {y.shape}")


def _class_table(class_weight, n_classes):
    """The weight of each class 0..C-1 (float64) from ``class_weight``; a class it does not
    name weighs 1 (as scikit-learn's class_weight dicts)."""
    if not isinstance(class_weight, Mapping):
        raise TypeError(f"class_weight must be a dict class -> weight; got {type(class_weight).__name__}")
    table = np.ones(n_classes)
    for c, w in class_weight.items():
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 0 <= c < n_classes:
            raise ValueError(f"class_weight keys must be classes, integers in [0, {n_classes}); got {c!r}")
        table[int(c)] = _rate(w, f"class_weight[{c!r}]")
    return table


def _sample_weight(sample_weight, n_rows):
    weights = as_float_array(sample_weight, np.float64, "sample_weight")
    if weights.shape != (n_rows,):
        raise ValueError(f"sample_weight must have one weight per row of X, shape ({n_rows},); got {weights.shape}")
    if n_rows and weights.min() < 0:
        raise ValueError(f"sample_weight must be >= 0; got a minimum of {weights.min()}")
    return weights


def row_weights(loss, y, n_out, dtype, class_weight, sample_weight):
    """The (N,) host row weights ``class_weight[c_i] * sample_weight_i`` (in float64, then
    rounded to ``dtype``; a row of no class, such as an ignore_index row, weighs 0), or
    None when both are None."""
    if class_weight is None and sample_weight is None:
        return None
    weights = np.ones(len(y))
    if class_weight is not None:
        classes, n_classes = _classes(loss, y, n_out)
        table = _class_table(class_weight, n_classes)
        inside = (classes >= 0) & (classes < n_classes)
        weights = np.where(inside, table[np.where(inside, classes, 0)], 0.0)
    if sample_weight is not None:
        weights = weights * _sample_weight(sample_weight, len(y))
    return weights.astype(dtype)


class _Buffers:
    """A batch size's device buffers for the augmented batch (made on first use)."""

    def __init__(self, k, n, X, y, weights, n_classes, mixing):
        self.perm = k.empty(n, np.int64) if mixing else None
        self.X = k.empty((n,) + X.shape[1:], X.dtype)
        if mixing:
            mixed_y = (n, n_classes) if y.dtype == np.int64 else (n,) + y.shape[1:]
            self.y = k.empty(mixed_y, X.dtype)
            self.dominant = k.empty((n,) + y.shape[1:], y.dtype)
            self.weights = None if weights is None else k.empty(n, weights.dtype)


def input_noise_key(seed, step, first_element=0):
    """The key of fit's input noise at update ``step`` of a model seeded ``seed``, for a
    batch (or a data-parallel shard) whose first element is element ``first_element`` of
    the step's whole batch: what :meth:`Augmentation.batch` draws with, and
    engine.compiled_steps' runs of whole batches too."""
    return offset_key(noise_key(seed, step), first_element)


class Augmentation:
    """fit's ``input_noise``, ``mixup``, ``class_weight`` and ``sample_weight``, checked
    against the data (X, y) before the validation split, and applied per batch."""

    def __init__(self, trainer, X, y, input_noise=0.0, mixup=0.0, class_weight=None, sample_weight=None):
        model, loss = trainer.model, trainer.loss
        self.input_noise = _rate(input_noise, "input_noise")
        self.mixup = _rate(mixup, "mixup")
        if self.mixup > 0 and getattr(loss, "ignore_index", None) is not None:
            raise ValueError("mixup mixes every row's targets, and a row of ignore_index has none: give a loss "
                             "without ignore_index, or mixup=0")
        if self.mixup > 0 and trainer._parallel is not None:
            raise ValueError("mixup with data_parallel=True is not supported (a row would mix with rows of "
                             "another rank's shard): use mixup=0")
        self.weights = row_weights(loss, y, model.sizes[-1], model.dtype, class_weight, sample_weight)
        self._trainer = trainer
        self._buffers = {}

    @property
    def active(self):
        return self.input_noise > 0 or self.mixup > 0

    def settings(self):
        """What data-parallel ranks must agree on."""
        return {"input_noise": self.input_noise, "mixup": self.mixup, "weights": self.weights is not None}

    def training_rows(self, n_rows):
        """Keep the weights of the first ``n_rows`` rows: the training rows of
        validation_split (engine.data.split_validation keeps the first rows)."""
        if self.weights is not None:
            self.weights = self.weights[:n_rows]

    def batch(self, X, y, weights, step, first_row):
        """(X, y, weights, dominant, perm) of a device batch as the step trains on it:
        mixed, then noised; ``dominant`` the device targets the training metrics compare
        with, ``perm`` the host permutation to apply to host targets for them (None when
        the targets are the batch's own)."""
        if not self.active:
            return X, y, weights, y, None
        trainer = self._trainer
        k, model = trainer.model._k, trainer.model
        n = X.shape[0]
        buffers = self._buffers.get(n)
        if buffers is None:
            buffers = self._buffers[n] = _Buffers(k, n, X, y, weights, model.sizes[-1], self.mixup > 0)
        dominant, host_perm = y, None
        if self.mixup > 0:
            lam = float(trainer._rng.beta(self.mixup, self.mixup))
            perm = trainer._rng.permutation(n).astype(np.int64)
            k.copy_into(buffers.perm, perm)
            k.mix_rows(X, buffers.perm, lam, buffers.X)
            if y.dtype == np.int64:
                k.mix_class_targets(y, buffers.perm, lam, model.sizes[-1], buffers.y)
            else:
                k.mix_rows(y, buffers.perm, lam, buffers.y)
            if weights is not None:
                k.mix_rows(weights, buffers.perm, lam, buffers.weights)
                weights = buffers.weights
            if lam < 0.5:
                k.take_rows(y, buffers.perm, buffers.dominant)
                dominant, host_perm = buffers.dominant, perm
            X, y = buffers.X, buffers.y
        if self.input_noise > 0:  # in place into the mixed batch (ours), else into our buffer
            key = input_noise_key(model._seed, step, first_row * X.shape[1])
            k.gaussian_noise(X, self.input_noise, key, buffers.X)
            X = buffers.X
        return X, y, weights, dominant, host_perm
