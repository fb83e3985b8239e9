"""Weight constraints applied after an update, in NumPy (see kernels.spec)."""
import numpy as np

from .. import spec
from .optim import _skipped


def max_norm(W, max_norm_value, status=None):
    if _skipped(status):
        return
    w = W.astype(np.float64)
    norms = np.sqrt(np.sum(w * w, axis=0))
    scale = np.minimum(norms, max_norm_value) / (spec.MAX_NORM_EPS + norms)
    W[...] = w * scale
