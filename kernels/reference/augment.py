"""Augmentation ops in NumPy (kernels.spec, "augmentation"): Gaussian input noise from the
counter-based hash, and mixup of rows and of class targets."""
import numpy as np

from .. import spec
from .rng import standard_normals


def gaussian_noise(X, std, key, out):
    spec.check_noise(X, out)
    dtype = X.dtype.type
    z = standard_normals(X.size, key).astype(X.dtype).reshape(X.shape)
    out[...] = X + dtype(std) * z


def _mix_factors(lam, dtype):
    """(l, r) = (lam, 1 - lam), each rounded to ``dtype``."""
    return dtype.type(lam), dtype.type(1.0 - lam)


def _partners(rows, perm):
    """``rows[perm[i]]`` for each i, a zero row where ``perm[i]`` is outside [0, N)."""
    inside = (perm >= 0) & (perm < len(rows))
    partner = np.zeros_like(rows)
    partner[inside] = rows[perm[inside]]
    return partner


def mix_rows(src, perm, lam, out):
    spec.check_mix_rows(src, perm, out, np.may_share_memory)
    left, right = _mix_factors(lam, src.dtype)
    out[...] = left * src + right * _partners(src, perm)


def _one_hot(targets, k, dtype):
    """Rows of ``onehot(targets[i])`` (zero rows for a class outside [0, k))."""
    rows = np.zeros((len(targets), k), dtype)
    inside = (targets >= 0) & (targets < k)
    rows[np.flatnonzero(inside), targets[inside]] = 1
    return rows


def mix_class_targets(targets, perm, lam, n_classes, out):
    spec.check_mix_class_targets(targets, perm, n_classes, out)
    one_hot = _one_hot(targets, n_classes, out.dtype)
    left, right = _mix_factors(lam, out.dtype)
    out[...] = left * one_hot + right * _partners(one_hot, perm)
