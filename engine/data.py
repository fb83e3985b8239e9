"""Host-side data helpers: preprocessing fitted on the training set, splits, minibatch order.

``Standardizer`` and ``PCAWhitening`` learn their statistics with ``fit`` on the training
rows only, then ``transform`` any rows (training, validation, test) with them, as
scikit-learn's transformers do; ``train_val_test_split`` cuts a data set in three,
stratified by class.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from .validation import as_numeric_array, check_finite, check_same_rows, number


def split_validation(X, y, fraction):
    """(X_train, y_train, X_val, y_val): the last ``fraction`` of the rows, unshuffled (as Keras)."""
    n_val = int(round(len(X) * fraction))
    if n_val == 0 or n_val == len(X):
        raise ValueError(f"validation_split={fraction} leaves {'no' if n_val == 0 else 'all'} of the "
                         f"{len(X)} samples for validation")
    return X[:-n_val], y[:-n_val], X[-n_val:], y[-n_val:]


def batch_slices(n, batch_size):
    """(start, stop) of each minibatch over ``n`` rows; the last may be shorter."""
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


class EpochBatches(NamedTuple):
    """An epoch's minibatches over ``n`` rows, worked out once per fit: ``slices`` of
    :func:`batch_slices`, their ``sizes`` (float64, the weights of the epoch's mean loss)
    and their ``edges`` (int64: batch b is rows ``edges[b]:edges[b + 1]``)."""

    slices: list
    sizes: np.ndarray
    edges: np.ndarray

    @classmethod
    def over(cls, n, batch_size):
        slices = batch_slices(n, batch_size)
        return cls(slices, np.array([stop - start for start, stop in slices], np.float64),
                   np.array([0] + [stop for _, stop in slices], np.int64))


def standardize(train, *others):
    """``train`` and ``others`` standardized by a :class:`Standardizer` fitted on ``train``."""
    scaler = Standardizer().fit(train)
    return tuple(scaler.transform(a) for a in (train, *others))


def _rows(X, argument, n_features=None):
    """``X`` as a finite 2-D float array (float32 kept, anything else float64) with
    ``n_features`` columns when given."""
    X = as_numeric_array(X, argument)
    if X.ndim != 2:
        raise ValueError(f"{argument} must be 2-D (n_samples, n_features); got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{argument} must not be empty; got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{argument} must have {n_features} columns (as the data fit saw); got shape {X.shape}")
    X = X.astype(X.dtype if X.dtype == np.float32 else np.float64, copy=False)
    check_finite(X, argument)
    return X


class _Transformer:
    """fit / transform / fit_transform / inverse_transform over rows, statistics in float64,
    results in the input's float dtype (float32 stays float32, anything else float64)."""

    def fit_transform(self, X):
        return self.fit(X).transform(X)

    def _fitted(self):
        if getattr(self, "mean_", None) is None:
            raise ValueError(f"this {type(self).__name__} is not fitted yet: call fit(X_train) first")
        return self.mean_.shape[0]


class Standardizer(_Transformer):
    """Per column ``z = (x - mean_) / scale_``, with ``mean_`` and ``scale_`` those of the
    rows given to ``fit``: the mean and the standard deviation
    ``sqrt(mean((x - mean_)^2))``, or 1 for a constant column (one whose deviation is
    within rounding, ``<= 10 eps max(|mean_|, 1)``, of zero): scikit-learn's
    ``StandardScaler``. ``inverse_transform`` maps back: ``x = z * scale_ + mean_``."""

    def __init__(self):
        self.mean_ = None
        self.scale_ = None

    def fit(self, X):
        X = _rows(X, "X").astype(np.float64)
        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale <= 10 * np.finfo(np.float64).eps * np.maximum(np.abs(self.mean_), 1.0)] = 1.0
        self.scale_ = scale
        return self

    def transform(self, X):
        X = _rows(X, "X", self._fitted())
        return ((X - self.mean_) / self.scale_).astype(X.dtype, copy=False)

    def inverse_transform(self, Z):
        Z = _rows(Z, "Z", self._fitted())
        return (Z * self.scale_ + self.mean_).astype(Z.dtype, copy=False)


class PCAWhitening(_Transformer):
    """PCA whitening: rotate the centred rows onto the principal axes of the training
    covariance and divide each axis by its standard deviation,

    ``C = (X - mean_)^T (X - mean_) / n = V diag(explained_variance_) V^T``,
    ``z = (x - mean_) V / sqrt(explained_variance_ + eps)``,

    with the rows of ``components_`` = ``V^T`` the axes by decreasing variance (each
    signed so that its largest entry is positive). The whitened training rows have
    covariance ``diag(explained_variance_ / (explained_variance_ + eps))``: the identity
    but for axes of variance near or below ``eps``, which ``eps`` keeps from being blown
    up. All ``n_features`` axes are kept, so ``inverse_transform``,
    ``x = z sqrt(explained_variance_ + eps) V^T + mean_``, maps back exactly.
    """

    def __init__(self, eps=1e-5):
        self.eps = number(eps, "eps", low=0.0)
        self.mean_ = None
        self.components_ = None
        self.explained_variance_ = None

    def fit(self, X):
        X = _rows(X, "X").astype(np.float64)
        self.mean_ = X.mean(axis=0)
        centred = X - self.mean_
        variance, axes = np.linalg.eigh(centred.T @ centred / X.shape[0])
        order = np.argsort(variance)[::-1]
        variance, axes = np.clip(variance[order], 0.0, None), axes[:, order]
        signs = np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(axes.shape[1])])
        self.components_ = (axes * signs).T
        self.explained_variance_ = variance
        return self

    def transform(self, X):
        X = _rows(X, "X", self._fitted())
        z = (X - self.mean_) @ self.components_.T / np.sqrt(self.explained_variance_ + self.eps)
        return z.astype(X.dtype, copy=False)

    def inverse_transform(self, Z):
        Z = _rows(Z, "Z", self._fitted())
        x = (Z * np.sqrt(self.explained_variance_ + self.eps)) @ self.components_ + self.mean_
        return x.astype(Z.dtype, copy=False)


def _fraction(value, argument):
    return number(value, argument, low=0.0, high=1.0, low_open=True, high_open=True)


def _controlled_rounding(sizes, split_sizes, rng):
    """``counts[c, s]``, the rows of class ``c`` (of ``sizes[c]``) in split ``s`` (of
    ``split_sizes[s]``): each the floor or the ceiling of its proportional share
    ``sizes[c] split_sizes[s] / n``, every class's and every split's total exact.

    The floors leave each class a few rows and each split a few places; the rows go to
    places, at most one more per (class, split) with a fractional share, by augmenting
    paths (a bipartite matching, which the fractional shares prove exists), the classes
    taken in random order so that no class is favoured with the extra rows.
    """
    n = int(sizes.sum())
    product = np.outer(sizes, split_sizes)
    counts, extra_allowed = product // n, product % n > 0
    taken = np.zeros_like(extra_allowed)
    free = split_sizes - counts.sum(axis=0)
    for c in rng.permutation(len(sizes)):
        for _ in range(int(sizes[c] - counts[c].sum())):
            # Breadth-first from class c: a split with a free place ends the path; a full
            # split leads on to the classes holding one of its extra places.
            came_from_class, came_from_split, queue, end = {}, {c: None}, [c], None
            while queue and end is None:
                a = queue.pop(0)
                for s in np.flatnonzero(extra_allowed[a] & ~taken[a]):
                    if s in came_from_class:
                        continue
                    came_from_class[s] = a
                    if free[s] > 0:
                        end = s
                        break
                    for b in np.flatnonzero(taken[:, s]):
                        if b not in came_from_split:
                            came_from_split[b] = s
                            queue.append(b)
            s = end
            free[s] -= 1
            while s is not None:  # along the path, each class trades the place it held for the next
                a = came_from_class[s]
                taken[a, s] = True
                s = came_from_split[a]
                if s is not None:
                    taken[a, s] = False
    return counts + taken


def train_val_test_split(X, y, val=0.2, test=0.2, stratify=True, seed=0):
    """``(X_train, X_val, X_test, y_train, y_val, y_test)``, in scikit-learn's
    ``train_test_split`` order (all the X parts, then the y parts).

    ``val`` and ``test`` are the fractions of the rows, each in (0, 1) with
    ``val + test < 1``: ``ceil(val n)`` and ``ceil(test n)`` rows (scikit-learn rounds
    its test size up), the training set the rest. With ``stratify`` each class (each
    distinct value of ``y``, or distinct row of a 2-D ``y``) is spread in proportion:
    a split of ``m`` rows holds ``m n_c / n`` rows of a class of ``n_c``, rounded up or
    down (every split of every class within one row of proportional, the totals exact);
    every class needs at least 2 rows (as in scikit-learn). ``seed`` (an int, or None for fresh entropy) fixes the
    shuffle; rows keep no order within a split.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 0 or X.shape[0] == 0:
        raise ValueError(f"X must be an array of rows, not empty; got shape {X.shape}")
    if y.ndim == 0:
        raise ValueError(f"y must have one row per row of X ({X.shape[0]}); got a scalar")
    check_same_rows(X, y)
    val, test = _fraction(val, "val"), _fraction(test, "test")
    if val + test >= 1:
        raise ValueError(f"val + test must be < 1 to leave rows for training; got val={val}, test={test}")
    if not isinstance(stratify, (bool, np.bool_)):
        raise TypeError(f"stratify must be True or False; got {type(stratify).__name__}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int or None; got {type(seed).__name__}")
    n = X.shape[0]
    n_val, n_test = math.ceil(val * n), math.ceil(test * n)
    if n_val + n_test >= n:
        raise ValueError(f"val={val} and test={test} of {n} rows leave no row for training "
                         f"({n_val} validation, {n_test} test)")
    rng = np.random.default_rng(seed)
    if stratify:
        _, labels = np.unique(y.reshape(n, -1), axis=0, return_inverse=True)
        labels = labels.ravel()
        sizes = np.bincount(labels)
        if sizes.min() < 2:
            raise ValueError(f"stratify=True needs at least 2 rows of every class in y; a class has "
                             f"{sizes.min()} (use stratify=False for continuous targets)")
        counts = _controlled_rounding(sizes, np.array([n - n_val - n_test, n_val, n_test]), rng)
        parts = ([], [], [])
        for c in range(len(sizes)):
            rows = rng.permutation(np.flatnonzero(labels == c))
            for part, piece in zip(parts, np.split(rows, np.cumsum(counts[c, :-1]))):
                part.append(piece)
        train, validation, testing = (rng.permutation(np.concatenate(part)) for part in parts)
    else:
        rows = rng.permutation(n)
        testing, validation, train = rows[:n_test], rows[n_test:n_test + n_val], rows[n_test + n_val:]
    return X[train], X[validation], X[testing], y[train], y[validation], y[testing]
