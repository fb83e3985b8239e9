"""Argument checks that name the argument, what was expected and what was given."""
from __future__ import annotations

import math
import numbers

import numpy as np


_ELEMENTWISE_MAX = 1 << 16
"""Elements up to which :func:`check_finite` looks at each (a temporary of as many bytes)."""


def as_numeric_array(value, argument):
    """A host NumPy array of real numbers (bool, int or float), else TypeError."""
    try:
        array = np.asarray(value.get() if hasattr(value, "get") and not isinstance(value, np.ndarray) else value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{argument} must be an array of real numbers; could not convert it ({error})") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{argument} must be an array of real numbers; got dtype {array.dtype}")
    return array


def check_finite(array, argument, all_finite=None):
    """ValueError naming ``argument`` where the host ``array`` holds a NaN or an inf.
    ``all_finite``: a backend's look for them (kernels.spec.Backend.all_finite), where
    faster than NumPy's; the elementwise look then runs only to name what it found."""
    if array.dtype.kind != "f":
        return
    if all_finite is not None:
        if all_finite(array):
            return
    elif array.size <= _ELEMENTWISE_MAX:
        # A batch's size: the elementwise look is cheaper than the sum's np.errstate (2 us).
        if np.isfinite(array).all():
            return
    else:
        # A finite sum proves every element finite without a temporary array; only an
        # overflowing sum or a bad element needs the elementwise look. The sum's own overflow
        # (finite values near the dtype's max) or inf - inf is no finding of ours: NumPy's
        # warning about it would precede our error, or be all a caller of finite data sees.
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(array.sum()):
                return
    bad = np.flatnonzero(~np.isfinite(array.ravel()))
    if len(bad):
        raise ValueError(f"{argument} must be finite in {array.dtype}; got NaN or Inf at {len(bad)} element(s), "
                         f"the first at flat index {bad[0]}")


def as_float_array(value, dtype, argument, all_finite=None):
    """``value`` as a finite array of ``dtype`` (checked after the cast, which may overflow;
    ``all_finite`` as :func:`check_finite`'s)."""
    array = as_numeric_array(value, argument)
    if array.dtype != dtype:
        with np.errstate(over="ignore"):
            array = array.astype(dtype)
    check_finite(array, argument, all_finite)
    return array


def check_features(X, n_in, dtype, argument="X", all_finite=None):
    """A 2-D, non-empty, finite input batch with ``n_in`` columns, as ``dtype``
    (``all_finite`` as :func:`check_finite`'s)."""
    X = as_numeric_array(X, argument)
    if X.ndim != 2:
        raise ValueError(f"{argument} must be 2-D (n_samples, {n_in}); got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{argument} must not be empty; got shape {X.shape}")
    if X.shape[1] != n_in:
        raise ValueError(f"{argument} must have {n_in} columns (the model's input size); got shape {X.shape}")
    return as_float_array(X, dtype, argument, all_finite)


def check_same_rows(X, y, x_argument="X", y_argument="y"):
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"{y_argument} must have one row per row of {x_argument} ({X.shape[0]}); got shape {y.shape}")


def number(value, argument, low=None, high=None, low_open=False, high_open=False, integer=False):
    """A real number (or int) within the given bounds, else TypeError/ValueError."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{argument} must be {'an integer' if integer else 'a number'}; got {type(value).__name__}")
    value = int(value) if integer else float(value)
    if not integer and not math.isfinite(value) and not (high is None and value == math.inf):
        raise ValueError(f"{argument} must be finite; got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"
        raise ValueError(f"{argument} must be in {interval}; got {value}")
    return value


def optional_number(value, argument, **bounds):
    return None if value is None else number(value, argument, **bounds)


def one_of(value, choices, argument):
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be one of {', '.join(map(repr, choices))}; got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{argument} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
