"""Augmentation ops of the Numba backend (kernels.spec, "augmentation"): Gaussian input
noise from the counter-based hash, mixup of rows and of class targets.

The noise and the row mixing are one pass over the batch, by blocks of elements (or of
rows) in parallel; the class targets' pass is over N integers, serial. The noise
works on flat arrays: a non-contiguous one as a contiguous copy, written back.
"""
import numpy as np

from .. import spec
from .jit import PARALLEL_MIN_WORK, serial_and_parallel, small_kernel
from .losses import ELEMENT_BLOCK
from .rng import noise_args, noise_value
from .vecmath import cast_like, cast_to, clear


def _build_gaussian_noise(loop):
    def gaussian_noise(x, std, key_lo, key_hi, second_hi, out):
        """``out[e] = x[e] + s z_e`` over flat arrays (``out`` may be ``x``)."""
        s = cast_to(std, x)
        for block in loop(-(-x.size // ELEMENT_BLOCK)):
            start = block * ELEMENT_BLOCK
            # Views, indexed from 0: a loop over elements start..stop of the whole arrays
            # stayed scalar (29 ns an element against 4).
            x_block, out_block = x[start:start + ELEMENT_BLOCK], out[start:start + ELEMENT_BLOCK]
            for i in range(x_block.size):
                out_block[i] = x_block[i] + s * cast_like(noise_value(start + i, key_lo, key_hi, second_hi), s)
    return gaussian_noise


_GAUSSIAN_NOISE = serial_and_parallel(_build_gaussian_noise)
# An element of noise (two hashes, a log, a square root and a cosine, vectorised: 3.5 ns
# here) costs what about 4 elements of a streaming pass do, so the threads pay from a
# quarter of the streaming threshold on: measured 115 us serially against 99 on 2 threads
# at 32768 elements, 58 against 75 at 16384.
NOISE_WORK_PER_ELEMENT = 4


def gaussian_noise(X, std, key, out):
    spec.check_noise(X, out)
    flat_x, flat_out = X.reshape(-1), out.reshape(-1)  # copies where no view exists
    _GAUSSIAN_NOISE[X.size * NOISE_WORK_PER_ELEMENT >= PARALLEL_MIN_WORK](flat_x, float(std), *noise_args(key),
                                                                         flat_out)
    if not np.may_share_memory(out, flat_out):
        out[...] = flat_out.reshape(out.shape)


def _build_mix_rows(loop):
    def mix_rows(src, perm, lam, out):
        """``out[i] = l src[i] + r src[perm[i]]`` on (N, K) arrays (partner 0 outside [0, N))."""
        n = src.shape[0]
        left, right = cast_to(lam, src), cast_to(1.0 - lam, src)
        zero = cast_like(0.0, left)
        for i in loop(n):
            p = perm[i]
            inside = 0 <= p < n
            row, o = src[i], out[i]
            partner = src[p] if inside else row  # read as zeros when outside
            for j in range(row.size):
                o[j] = left * row[j] + right * (partner[j] if inside else zero)
    return mix_rows


_MIX_ROWS = serial_and_parallel(_build_mix_rows)


def _as_rows(array):
    """A (N, K) view of a (N,) or (N, K) array."""
    return array if array.ndim == 2 else array[:, None]


def mix_rows(src, perm, lam, out):
    spec.check_mix_rows(src, perm, out, np.may_share_memory)
    _MIX_ROWS[src.size >= PARALLEL_MIN_WORK](_as_rows(src), perm, float(lam), _as_rows(out))


@small_kernel
def _mix_class_targets(targets, perm, lam, out):
    """``out[i] = l onehot(y_i) + r onehot(y_perm[i])``: ``l`` and ``r`` added into a
    zeroed row (so ``l + r`` where both classes agree, as the reference's sum)."""
    n, k = out.shape
    left, right = cast_to(lam, out), cast_to(1.0 - lam, out)
    for i in range(n):
        row = out[i]
        clear(row)
        y = targets[i]
        if 0 <= y < k:
            row[y] += left
        p = perm[i]
        if 0 <= p < n:
            y = targets[p]
            if 0 <= y < k:
                row[y] += right


def mix_class_targets(targets, perm, lam, n_classes, out):
    spec.check_mix_class_targets(targets, perm, n_classes, out)
    _mix_class_targets(targets, perm, float(lam), out)
