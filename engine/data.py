"""Host-side data helpers: splits and minibatch order."""
from __future__ import annotations

import numpy as np


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


def standardize(train, *others):
    """Scale columns to zero mean and unit variance by ``train``'s statistics (constant columns kept)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return tuple((a - mean) / std for a in (train, *others))
