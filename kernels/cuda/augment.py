"""The augmentation ops of :mod:`kernels.spec` on CuPy arrays (CUDA C in ``augment.cu``):
one launch each, on the current stream, with nothing read back."""
import cupy
import numpy as np

from .. import rng, spec
from .compiler import Source, instances, scalar
from .losses import ELEMENT_THREADS, ELEMENTS_PER_THREAD, grid_blocks

SOURCE = Source("augment.cu", [
    *instances("gaussian_noise"), *instances("mix_rows"), *instances("mix_class_targets"),
])


def _into(out, kernel, items, args):
    """Launch ``kernel(*args, out)`` over ``items``; a non-contiguous ``out`` is computed
    into a contiguous temporary, then copied into it."""
    written = out if out.flags.c_contiguous else cupy.empty(out.shape, out.dtype)
    blocks = grid_blocks(items, ELEMENT_THREADS * ELEMENTS_PER_THREAD)
    if blocks:
        kernel((blocks,), (ELEMENT_THREADS,), (*args, written))
    if written is not out:
        out[...] = written


def _mix_factors(lam, dtype):
    """(lam, 1 - lam) as the kernels' T, each rounded to ``dtype`` as the reference's."""
    return scalar(lam, dtype), scalar(1.0 - lam, dtype)


def gaussian_noise(X, std, key, out):
    spec.check_noise(X, out)
    key_lo, key_hi = rng.split_key(int(key))
    _into(out, SOURCE.function("gaussian_noise", X.dtype), X.size,
          (cupy.ascontiguousarray(X), np.int64(X.size), scalar(std, X.dtype), np.uint32(key_lo),
           np.uint32(key_hi), np.uint32(key_hi ^ rng.NOISE_SECOND_STREAM)))


def mix_rows(src, perm, lam, out):
    spec.check_mix_rows(src, perm, out, cupy.may_share_memory)
    n = src.shape[0]
    k = src.size // n if n else 0
    _into(out, SOURCE.function("mix_rows", src.dtype), src.size,
          (cupy.ascontiguousarray(src), cupy.ascontiguousarray(perm), np.int64(n), np.int64(k),
           *_mix_factors(lam, src.dtype)))


def mix_class_targets(targets, perm, lam, n_classes, out):
    spec.check_mix_class_targets(targets, perm, n_classes, out)
    _into(out, SOURCE.function("mix_class_targets", out.dtype), out.size,
          (cupy.ascontiguousarray(targets), cupy.ascontiguousarray(perm), np.int64(out.shape[0]),
           np.int64(n_classes), *_mix_factors(lam, out.dtype)))
