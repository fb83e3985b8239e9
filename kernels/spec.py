"""The backend interface: the fused ops every backend implements, with their formulas.

A backend is a module (``kernels.reference``, ``kernels.cpu``, ``kernels.cuda``) that
exposes the names of :class:`Backend` with exactly these semantics. ``engine`` calls
only these ops; it never does array arithmetic of its own. ``kernels.reference`` is the
oracle: plain NumPy written for clarity, against which the other backends are tested.

Conventions shared by all ops
-----------------------------
* Arrays are backend arrays (NumPy for ``reference`` and ``cpu``, CuPy for ``cuda``)
  of one floating dtype (float32 or float64) per call. Integer class targets are int64.
* Every op writes into the output arrays it is given and allocates nothing that
  outlives the call; output arguments documented "may be None" are skipped.
* Activations, reductions and output functions are small integer codes (below), so
  that compiled kernels can branch on them cheaply.
* Dropout masks come from the counter-based hash :func:`kernels.rng.keep_threshold` and
  :func:`kernels.rng.dropout_key`: every backend produces the same mask bit for bit.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

# Activation codes. ``act_param`` is the slope of leaky_relu and the alpha of elu;
# prelu reads its per-unit slopes from the ``slope`` array instead.
IDENTITY, RELU, LEAKY_RELU, ELU, SELU, GELU, GELU_TANH, SILU, SOFTPLUS, TANH, SIGMOID, PRELU = range(12)

# Normalization kinds of norm_forward / norm_backward: torch BatchNorm1d over the rows of
# a batch, LayerNorm over the units of each row.
NORM_BATCH, NORM_LAYER = 1, 2

# Loss reductions, torch semantics.
NONE, MEAN, SUM = range(3)

# Output functions applied by ``MLP.predict``.
OUTPUT_NONE, OUTPUT_SIGMOID, OUTPUT_SOFTMAX = range(3)

# ``ignore_index`` value meaning "ignore nothing": valid targets are never negative.
NO_IGNORE = -(2**63)

# softplus(x) = x above this (torch's threshold), where log1p(exp(-x)) is below rounding.
SOFTPLUS_THRESHOLD = 20.0

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# Streaming metrics accumulated on the device by ``metric_sums``.
METRIC_ACCURACY, METRIC_SQUARED_ERROR, METRIC_ABSOLUTE_ERROR, METRIC_CROSS_ENTROPY = range(4)

# The per-step status record ``guard_update`` writes (a float64 array of GUARD_SIZE):
# GUARD_BAD_STEP holds 1 + the index of the first non-finite update (0: none yet),
# GUARD_REASON why (REASON_LOSS or REASON_GRADIENT), GUARD_SKIP whether this step's
# update is skipped (1.0) or made (0.0). The optimizers read GUARD_SKIP.
GUARD_BAD_STEP, GUARD_REASON, GUARD_SKIP = range(3)
GUARD_SIZE = 3
REASON_LOSS, REASON_GRADIENT = 1, 2

# What clip_global_norm adds to the global norm before dividing, as torch's clip_grad_norm_
# does: ``min(1, c / (norm + CLIP_NORM_EPS))`` stays finite for a zero gradient.
CLIP_NORM_EPS = 1e-6

# What the optimizers do after their step with an L1 penalty ``seg_l1`` (see
# Backend.sgd): nothing (the penalty went into the gradient, grad_sq_norms), the
# lecture's clipped update, or soft-thresholding (ISTA's proximal step).
L1_GRADIENT, L1_CLIPPED, L1_PROXIMAL = range(3)

# What max_norm adds to a column's norm before dividing: Keras' backend.epsilon(), which
# its MaxNorm constraint adds (keras/src/constraints/constraints.py, MaxNorm.__call__).
MAX_NORM_EPS = 1e-7


def frozen_backward(dW, db, dslope) -> bool:
    """Whether :meth:`Backend.dense_backward`'s ``dW``, ``db``, ``dslope`` ask for a frozen
    layer's backward (all None); ValueError, naming them, for any other mix with a None."""
    if (dW is None) != (db is None):
        raise ValueError("dW, db: both arrays, or both None for a frozen layer; got dW "
                         f"{'None' if dW is None else 'an array'} and db {'None' if db is None else 'an array'}")
    if dW is None and dslope is not None:
        raise ValueError("dslope: must be None when dW and db are (a frozen layer's slopes are frozen too)")
    return dW is None


def check_norm(kind, training, rows) -> None:
    """ValueError unless ``kind`` is NORM_BATCH or NORM_LAYER and, for batch norm in
    training, the batch has at least 2 ``rows`` (the unbiased variance divides by N - 1)."""
    if kind not in (NORM_BATCH, NORM_LAYER):
        raise ValueError(f"kind: {kind!r} is neither NORM_BATCH ({NORM_BATCH}) nor NORM_LAYER ({NORM_LAYER})")
    if kind == NORM_BATCH and training and rows < 2:
        raise ValueError(f"Z: batch norm in training needs a batch of at least 2 rows (the unbiased "
                         f"running variance divides by N - 1); got {rows}")


def frozen_norm_backward(db, dgamma, dbeta, dslope) -> bool:
    """Whether :meth:`Backend.norm_backward`'s gradients ask for a frozen layer's backward
    (``db``, ``dgamma``, ``dbeta`` and ``dslope`` all None); ValueError, naming them, for
    any other mix with a None (the rules of :func:`frozen_backward`)."""
    given = [name for name, array in (("db", db), ("dgamma", dgamma), ("dbeta", dbeta)) if array is not None]
    if given and len(given) < 3:
        raise ValueError("db, dgamma, dbeta: all arrays, or all None for a frozen layer; got arrays for "
                         f"{', '.join(given)} only")
    if not given and dslope is not None:
        raise ValueError("dslope: must be None when db, dgamma and dbeta are (a frozen layer's slopes "
                         "are frozen too)")
    return not given


def check_weights(weights, pred) -> None:
    """TypeError or ValueError, naming ``weights``, unless it is None or a (N,) array of
    the dtype of ``pred`` (N = pred.shape[0]): the row weights of a loss."""
    if weights is not None:
        if pred.ndim == 0:
            raise ValueError("weights: a 0-d prediction has no rows to weight; give None")
        _expect(weights, "weights", (pred.dtype,), pred.shape[:1])


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_INT64 = np.dtype(np.int64)


def _expect(array, argument, dtypes, shape=None, ndims=None):
    """TypeError or ValueError, naming ``argument``, unless ``array`` has one of ``dtypes``
    and ``shape`` (or a number of dimensions among ``ndims``)."""
    dtype = getattr(array, "dtype", None)
    if dtype not in dtypes:
        raise TypeError(f"{argument}: expected an array of dtype {' or '.join(map(str, dtypes))}; got "
                        f"{type(array).__name__ if dtype is None else dtype}")
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(f"{argument}: expected shape {tuple(shape)}; got {array.shape}")
    if ndims is not None and array.ndim not in ndims:
        raise ValueError(f"{argument}: expected {' or '.join(map(str, ndims))} dimensions; got shape {array.shape}")


def check_noise(X, out) -> None:
    """The arguments of :meth:`Backend.gaussian_noise`: ``out`` of X's float dtype and shape."""
    _expect(X, "X", _FLOATS)
    _expect(out, "out", (X.dtype,), X.shape)


def check_mix_rows(src, perm, out, overlap) -> None:
    """The arguments of :meth:`Backend.mix_rows`; ``overlap(a, b)`` tells whether two arrays
    of the backend may share memory (ValueError when src and out do)."""
    _expect(src, "src", _FLOATS, ndims=(1, 2))
    _expect(perm, "perm", (_INT64,), src.shape[:1])
    _expect(out, "out", (src.dtype,), src.shape)
    if overlap(src, out):
        raise ValueError("out: must not overlap src (mix_rows reads rows other rows were written "
                         "from); give another array")


def check_mix_class_targets(targets, perm, n_classes, out) -> None:
    """The arguments of :meth:`Backend.mix_class_targets`."""
    _expect(targets, "targets", (_INT64,), ndims=(1,))
    _expect(perm, "perm", (_INT64,), targets.shape)
    _expect(out, "out", _FLOATS, (targets.shape[0], n_classes))


class Backend(Protocol):
    """What a backend module provides. Formulas use row batches ``X`` of shape (N, fan_in)."""

    name: str
    # The BLAS behind :meth:`matmul` for large GEMMs, for reports: "NumPy" (NumPy's own),
    # "MKL" (the numba backend with the mkl extra) or "cuBLAS".
    gemm_library: str

    # ----------------------------------------------------------------- arrays
    def to_device(self, host: np.ndarray, dtype) -> object:
        """A backend array with ``host``'s values in ``dtype`` (no copy when already so)."""

    def to_host(self, array) -> np.ndarray:
        """A NumPy array with the values of a backend array."""

    def empty(self, shape, dtype) -> object:
        """An uninitialised C-contiguous backend array."""

    def zeros(self, shape, dtype) -> object:
        """A zero-filled C-contiguous backend array."""

    def copy_into(self, dst, src) -> None:
        """``dst[...] = src`` where ``src`` may be a host or backend array."""

    def take_rows(self, src, index, out) -> None:
        """``out[i] = src[index[i]]``: rows of a backend array ``src`` (N, ...) gathered by
        the int64 backend array ``index`` (n,) into ``out`` (n, ...), e.g. a shuffled
        minibatch of a data set kept on the device."""

    def all_finite(self, values) -> bool:
        """Whether no element of ``values`` is NaN or an inf: a backend array or a host
        NumPy array (checked where it is, on the host) of any shape and strides, float32
        or float64, or of an integer or bool dtype (always finite). An empty array is
        finite. The trainer's check of its inputs."""

    # ----------------------------------------------------------------- graphs
    def capture(self, work) -> Callable[[], None] | None:
        """``work`` (a function of no arguments that queues ops of this backend) recorded
        as one graph: returns ``replay``, a function of no arguments that queues that
        device work again in one launch; or None where the backend has no graphs (the CPU
        backends, where an op costs no launch to save) or could not record this work (it
        allocated device memory, or the driver refused: warned), and the caller then
        calls ``work`` itself.

        Nothing runs while recording: the work first happens at the first replay. A replay
        passes the recorded arguments again, the same arrays (their values as they are
        then) and the same scalars, so whatever changes between replays must be array
        contents. ``replay`` holds ``work``, so the arrays it refers to stay allocated
        while ``replay`` is kept; an array ``work`` reaches through an object (a model's
        buffers) must not be replaced by another meanwhile. ``work`` must read nothing
        back to the host.
        """

    # ------------------------------------------------------------ dense layer
    def dense_forward(self, X, W, b, act, act_param, slope, dropout_p, key, Z, Y,
                      alive=None) -> None:
        """Fused dense forward.

        ``Z = X @ W + b`` and ``Y = act(Z) * m / (1 - p)``, with ``m[i, j]`` the keep bit
        of element ``i * fan_out + j`` for dropout ``key`` (``m = 1`` when ``p == 0``).
        ``Y`` may be the same array as ``Z``; ``slope`` (fan_out,) is read for prelu only.

        ``alive`` (fan_out,) uint8, or None (nothing more is done): the units that fired,
        ``alive[j] = 1`` where ``act(Z[i, j]) > 0`` for some row ``i`` (before dropout),
        the other entries left as they are; an OR over calls, so a caller that zeroes it
        and passes it to every forward of an epoch finds the units that were zero on every
        row of the epoch (the dead units of a ReLU layer) as the zeros left.
        """

    def dense_backward(self, dY, X, W, Z, act, act_param, slope, dropout_p, key,
                       dZ, dW, db, dslope, dX) -> None:
        """Fused dense backward of :meth:`dense_forward`.

        ``dZ = dY * m / (1 - p) * act'(Z)``, ``db = sum_i dZ[i]``, ``dW = X.T @ dZ``,
        ``dX = dZ @ W.T`` (skipped when ``dX`` is None) and, for prelu,
        ``dslope[j] = sum_i (dY * m / (1 - p))[i, j] * min(Z[i, j], 0)`` (``dslope`` is None
        otherwise). The mask is regenerated from ``key``, never stored. ``dZ`` may be the
        same array as ``Z`` or as ``dY``.

        A frozen layer (``engine.MLP.freeze``) passes ``dW``, ``db`` and ``dslope`` all None:
        then only ``dZ`` (and ``dX`` when given) is computed, with neither the weight-gradient
        GEMM ``X.T @ dZ`` nor the column sums of ``db`` and ``dslope``. ``dW`` and ``db`` are
        both arrays or both None (else ValueError), and ``dslope`` is None when they are.
        """

    def dropout_mask(self, dropout_p, key, out) -> None:
        """``out[i, j] = m[i, j] / (1 - p)``: the scaled keep mask dense_forward applies."""

    def apply_output(self, kind, X, out) -> None:
        """``out = X`` (OUTPUT_NONE), ``sigmoid(X)`` or the row-wise ``softmax(X)``."""

    def matmul(self, a, b, out) -> None:
        """``out = a @ b`` (2-D, one float dtype) through the BLAS the dense ops call for a
        GEMM of this size: what a benchmark times as the GEMM floor of a step."""

    # ---------------------------------------------------------- normalization
    # Batch norm and layer norm as the epilogue of a dense layer's GEMM: the model computes
    # ``Z = X @ W`` by :meth:`matmul`, then norm_forward does everything elementwise and the
    # statistics in one op; norm_backward does the reverse before the model's GEMMs
    # ``dW = X.T @ dZ`` and ``dX = dZ @ W.T``. Units are the M columns of Z (N, M);
    # ``gamma``, ``beta``, ``b`` and prelu's ``slope`` are (M,). Batch norm (NORM_BATCH)
    # normalizes each column over the N rows, layer norm (NORM_LAYER) each row over its M
    # units; ``rstd`` is (M,) for batch norm and (N,) for layer norm.
    def norm_forward(self, kind, Z, b, gamma, beta, eps, training, momentum, running_mean,
                     running_var, act, act_param, slope, dropout_p, key, xhat, rstd, Y,
                     alive=None) -> None:
        """Fused normalization forward (torch BatchNorm1d / LayerNorm, then the activation).

        With ``H = Z + b`` (in the dtype):

        * batch norm in training: ``mu_j = mean_i H[i, j]``, ``var_j = mean_i (H[i, j] - mu_j)^2``
          (the biased variance), and the running estimates move on:
          ``running_mean = (1 - momentum) running_mean + momentum mu``,
          ``running_var = (1 - momentum) running_var + momentum var N / (N - 1)`` (the
          unbiased variance there); N < 2 is a ValueError (:func:`check_norm`);
        * batch norm in evaluation (``training`` False): ``mu, var = running_mean,
          running_var``, which are left as they are;
        * layer norm: ``mu_i``, ``var_i`` the mean and biased variance of row i of H, the
          same in training and evaluation; ``running_mean``, ``running_var`` and
          ``momentum`` are unused (may be None).

        Statistics are accumulated in float64 whatever the dtype, by two passes (the mean,
        then the mean squared deviation from it), and ``running_*`` updated in float64 from
        their values, each rounded once to the dtype: float32 data get float32-rounded
        statistics (torch computes them in float32). Then, with ``mu`` rounded to the dtype,
        ``rstd = 1 / sqrt(var + eps)`` (computed in float64, rounded) written to ``rstd``, and
        in the dtype:

            xhat = (H - mu) * rstd              written to ``xhat`` (N, M)
            A    = gamma * xhat + beta          (never stored)
            Y    = act(A) * m / (1 - p)

        with ``m`` the dropout keep mask of :meth:`dense_forward` (element ``i * M + j``
        under ``key``), its activations and prelu ``slope`` semantics, and ``alive`` as
        there (the units where ``act(A) > 0`` on some row). ``xhat`` may be the same array
        as Z (normalized in place, as the model keeps it for the backward); ``Y`` may be Z
        as well, and when it is also ``xhat`` the array ends holding Y (a forward that no
        backward follows).
        """

    def norm_backward(self, kind, dY, xhat, gamma, beta, rstd, act, act_param, slope,
                      dropout_p, key, dZ, db, dgamma, dbeta, dslope) -> None:
        """Fused normalization backward of a training :meth:`norm_forward`.

        ``A = gamma * xhat + beta`` is recomputed (never stored) and the mask regenerated
        from ``key``; then

            u       = dY * m / (1 - p)
            dA      = u * act'(A)
            dgamma_j = sum_i dA[i, j] xhat[i, j]      dbeta_j = sum_i dA[i, j]
            dslope_j = sum_i u[i, j] min(A[i, j], 0)  (prelu; None otherwise)
            dxhat   = dA * gamma

        and, through the statistics of the batch (batch norm: over the N rows of column j,
        with ``rstd_j``) or of the row (layer norm: over the M units of row i, with
        ``rstd_i``), the gradient of ``H = Z + b``:

            batch:  dH[i, j] = rstd_j (dxhat[i, j] - mean_i dxhat[., j]
                                        - xhat[i, j] mean_i (dxhat[., j] xhat[., j]))
            layer:  dH[i, j] = rstd_i (dxhat[i, j] - mean_j dxhat[i, .]
                                        - xhat[i, j] mean_j (dxhat[i, .] xhat[i, .]))

        written to ``dZ`` (dZ = dH, as Z = H - b), which may be the same array as ``xhat`` or
        as ``dY``; and ``db_j = sum_i dH[i, j]`` (near 0 for batch norm, whose output does
        not depend on a shift of a column). Sums are taken in the dtype, each in an order
        fixed by the shapes (bitwise the same run to run and whatever the thread count),
        as :meth:`dense_backward`'s.

        A frozen layer passes ``db``, ``dgamma``, ``dbeta`` and ``dslope`` all None: then
        only ``dZ`` is computed (batch norm still sums the columns its dH needs, into
        scratch). ``db``, ``dgamma`` and ``dbeta`` are all arrays or all None (else
        ValueError), and ``dslope`` is None when they are (:func:`frozen_norm_backward`).
        """

    # ----------------------------------------------------------------- losses
    # Each loss returns the reduced loss as a float (for NONE: the sum), writes the
    # per-sample losses torch returns with reduction="none" into ``losses`` and the
    # gradient of the reduced loss with respect to the predictions into ``grad``
    # (for NONE: the gradient of the sum). ``losses`` and ``grad`` may be None.
    # ``total`` (a float64 array of shape (1,), or None): when given, the reduced loss is
    # written to ``total[0]`` on the device and the op returns None, so that a step never
    # waits for the device to hand a float back.
    # ``weights`` ((N,) of the predictions' dtype, N their rows, or None: all ones, and the
    # results are then bit for bit those of the unweighted loss): sample weights, Keras
    # semantics. Row i's per-sample losses (all K of them for an elementwise loss on
    # (N, K)) become ``w_i * loss`` (rounded in the dtype), SUM adds those, MEAN divides
    # their sum by the same count as unweighted (N, N K, or the kept rows of class targets;
    # not by the sum of the weights, unlike torch's class ``weight``), and the gradient
    # of row i is ``d loss / d x * (w_i * scale)``, scale = 1 / count for MEAN else 1
    # (``w_i * scale`` rounded in the dtype first). With weights, ``losses`` holds the
    # weighted per-sample losses (torch's reduction="none" output times w).
    def softmax_cross_entropy(self, logits, targets, label_smoothing, ignore_index,
                              reduction, losses, grad, total=None, weights=None) -> float | None:
        """Softmax cross-entropy on logits (N, K), torch ``cross_entropy`` semantics.

        With ``p = softmax(logits[i])`` and smoothing ``e``:
        class targets (N,) int64: ``t = (1 - e) * onehot(y_i) + e / K`` and rows with
        ``y_i == ignore_index`` contribute nothing; MEAN divides by the number of kept rows
        (none kept: the loss is NaN and the gradient 0, as in torch).
        Distribution targets (N, K): ``t = (1 - e) * targets[i] + e / K``; MEAN divides by N.
        ``loss_i = -sum_k t_k log p_k`` and ``d loss_i / d logits = p * sum_k t_k - t``.
        """

    def binary_cross_entropy(self, logits, targets, reduction, losses, grad, total=None,
                             weights=None) -> float | None:
        """Sigmoid BCE on logits, elementwise, same shapes:
        ``l = max(x, 0) - x t + log(1 + exp(-|x|))``, ``dl/dx = sigmoid(x) - t``;
        MEAN divides by the number of elements."""

    def mse(self, pred, targets, reduction, losses, grad, total=None, weights=None) -> float | None:
        """``l = (x - t)^2`` elementwise, ``dl/dx = 2 (x - t)``; MEAN over all elements."""

    def huber(self, pred, targets, delta, reduction, losses, grad, total=None,
              weights=None) -> float | None:
        """torch HuberLoss: with ``d = x - t``, ``l = d^2 / 2`` if ``|d| < delta`` else
        ``delta (|d| - delta / 2)``; ``dl/dx = clip(d, -delta, delta)``; MEAN over all."""

    # ----------------------------------------------------------- augmentation
    # What fit's input_noise and mixup do to a batch, as ops on the device (../API.md,
    # "Augmentation"): the trainer draws the key, lam and the permutation on the host and
    # never reads anything back. Class indices outside their range (as ignore_index) stand
    # for no class: their one-hot row is 0, never an error (an error would cost the device
    # a sync); the trainer validates targets. (fit's class_weight and sample_weight are
    # per-row weights the trainer computes on the host once per fit: the losses' ``weights``.)
    def gaussian_noise(self, X, std, key, out) -> None:
        """``out = X + s z``: Gaussian input noise of standard deviation ``s = std``.

        ``z_e`` is the standard normal value of element ``e`` (its C-order position in X's
        shape, whatever the strides) under ``key`` (:func:`kernels.rng.noise_key`), by the
        Box-Muller formula of :mod:`kernels.rng` on two 32-bit hash words, in float64:

            u1 = (h1 + 1) / 2^32,  u2 = h2 / 2^32,  z = sqrt(-2 ln u1) cos(2 pi u2)

        then ``z`` and ``s`` are rounded to X's dtype, and ``s z`` and the sum computed in
        it. The hash words are the same on every backend bit for bit, z to a few ulp of its
        log and cos (libm's; the numba backend's own, kernels.cpu.vecmath). ``out`` has X's
        shape and dtype and may be X (noise added in place);
        :func:`kernels.rng.offset_key` gives a shard of rows the noise the whole batch
        would draw there, as for dropout masks."""

    def mix_rows(self, src, perm, lam, out) -> None:
        """Mixup of rows: ``out[i] = l src[i] + r src[perm[i]]`` for ``src`` (N,) or (N, K)
        of a float dtype and ``perm`` (N,) int64, with ``l = lam`` and ``r = 1 - lam``
        (computed in float64) each rounded to the dtype, the products and the sum in it.
        A ``perm[i]`` outside [0, N) adds nothing (``out[i] = l src[i]``). ``out`` has
        src's shape and dtype and must not overlap src (ValueError): rows are read after
        others are written. The trainer mixes inputs, float targets and the (N,) row
        weights of the losses by it, under one ``perm``."""

    def mix_class_targets(self, targets, perm, lam, n_classes, out) -> None:
        """Mixup of class targets into distributions: ``out`` (N, K), K = ``n_classes``
        (``out.shape[1]``, else ValueError), of a float dtype,

            out[i] = l onehot(targets[i]) + r onehot(targets[perm[i]])

        with ``l``, ``r`` of :meth:`mix_rows` (bit for bit mix_rows of the one-hot rows:
        ``l + r`` in the dtype where both classes agree). ``targets`` and ``perm`` (N,)
        int64; onehot(c) is the zero row for c outside [0, K), and so is the second term
        for a ``perm[i]`` outside [0, N). :meth:`softmax_cross_entropy` takes ``out`` as
        its distribution targets."""

    # ------------------------------------------------------------- optimizers
    # Parameters, gradients and state are flat 1-D arrays of one length. The flat buffer
    # is cut into segments (one per W, b or prelu slope) by ``offsets`` (S + 1,) int64.
    # Every update first forms the effective gradient of element i in segment s:
    #     g = clip(grads[i], -clip_value, clip_value) * seg_scale[s]
    # (clip_value = inf disables clamping; seg_scale carries norm clipping), then applies
    # the optimizer with weight decay ``seg_decay[s]`` (0 where a segment is exempt).
    # ``grads`` is never written. Updates are in place; ``step`` counts from 1.
    # ``seg_l1`` (S,) float64 and ``l1_rule`` (every optimizer takes them after
    # ``clip_value``): an L1 penalty applied after the optimizer's step, where both the value
    # before the update (w_old) and the stepped value w are at hand. With
    # ``t = lr * seg_l1[s]`` (in float64, then rounded to the dtype):
    #     L1_GRADIENT (or seg_l1 None): nothing more (the penalty is in the gradient,
    #                  see grad_sq_norms);
    #     L1_CLIPPED:  w -= min(t, |w_old|) * sign(w_old)  (the lecture's rule: the penalty
    #                  moves a weight towards zero but never across it);
    #     L1_PROXIMAL: w = sign(w) * max(|w| - t, 0)  (soft-thresholding, ISTA: exact zeros),
    # with sign(0) = 0; a NaN stays NaN. Another ``l1_rule`` is a ValueError.
    # ``status`` (the record of :meth:`guard_update`, or None): when
    # ``status[GUARD_SKIP] != 0`` the update changes nothing, neither parameters nor state.
    # ``diag`` (S, 2) float64, or None (nothing more is done): the update's size per
    # segment, added in the same pass. With p the parameters before the update and p' after:
    #     diag[s, 0] += sum_{i in s} (p'_i - p_i)^2      diag[s, 1] += sum_{i in s} p_i^2
    # each term in float64 from the dtype's values (p' - p the change the update made,
    # weight decay and the L1 rule included). A skipped update adds nothing. Summed over an epoch's updates,
    # ``sqrt(diag[s, 0] / diag[s, 1])`` is the update-to-weight ratio ||dW|| / ||W|| of
    # segment s (root mean squares over the updates).
    def grad_sq_norms(self, grads, offsets, clip_value, out, acc=None, params=None, seg_l1=None,
                      seg_l2=None, l1_in_gradient=True, total=None) -> None:
        """``out[s] = sum_{i in s} clip(grads[i], -clip_value, clip_value)^2`` (float64);
        ``acc`` (S,) float64, or None: when given, also ``acc[s] += out[s]`` (a sum over
        steps kept on the device).

        L2 and L1 penalties ``sum_s (seg_l2[s] / 2 ||w_s||^2 + seg_l1[s] ||w_s||_1)`` on the
        parameters ``params`` (the flat buffer of ``grads``' shape and dtype; None: no
        penalty, nothing below is done), in the same pass: ``seg_l1`` and ``seg_l2`` (S,)
        float64 are then required (0 where a segment is exempt). First, in place, with
        ``l2 = seg_l2[s]`` and ``l1 = seg_l1[s]`` rounded to the dtype, the penalty's gradient
        joins the loss gradient (before any clipping):

            grads[i] = grads[i] + l2 params[i] + l1 sign(params[i])     (sign(0) = 0)

        (the l1 term only when ``l1_in_gradient``; the optimizers' ``l1_rule`` applies it
        otherwise); ``out`` is then computed from these gradients. ``total`` ((1,) float64,
        or None: not computed), e.g. the loss's ``total``: the penalty's value is added::

            total[0] += sum_s (seg_l2[s] / 2 sum_{i in s} params[i]^2 + seg_l1[s] sum_{i in s} |params[i]|)

        with the sums in float64 from the dtype's values, the l1 term counted whether or not
        it is in the gradient. Its d/d params[i] is the term added to ``grads[i]``."""

    def sgd(self, params, grads, momentum_buf, offsets, seg_scale, seg_decay, clip_value,
            seg_l1, l1_rule, lr, momentum, dampening, nesterov, decoupled, first_step,
            status=None, diag=None) -> None:
        """torch SGD, or SGDW. Decay: SGDW (``decoupled``) ``p *= 1 - lr wd`` first, SGD
        ``g += wd p``; with momentum ``buf = g`` on the first step else
        ``buf = momentum buf + (1 - dampening) g``; ``g = g + momentum buf`` (nesterov) or
        ``g = buf``; ``p -= lr g``. ``momentum_buf`` is unused when ``momentum == 0``."""

    def adagrad(self, params, grads, state_sum, offsets, seg_scale, seg_decay, clip_value,
                seg_l1, l1_rule, lr, eps, status=None, diag=None) -> None:
        """torch Adagrad: ``g += wd p``; ``sum += g^2``; ``p -= lr g / (sqrt(sum) + eps)``."""

    def rmsprop(self, params, grads, square_avg, grad_avg, momentum_buf, offsets, seg_scale,
                seg_decay, clip_value, seg_l1, l1_rule, lr, alpha, eps, momentum, centered, status=None,
                diag=None) -> None:
        """torch RMSprop: ``g += wd p``; ``v = alpha v + (1 - alpha) g^2``; centered:
        ``ga = alpha ga + (1 - alpha) g`` and ``avg = sqrt(v - ga^2) + eps``, else
        ``avg = sqrt(v) + eps``; momentum > 0: ``buf = momentum buf + g / avg``,
        ``p -= lr buf``; else ``p -= lr g / avg``."""

    def adadelta(self, params, grads, square_avg, acc_delta, offsets, seg_scale, seg_decay,
                 clip_value, seg_l1, l1_rule, lr, rho, eps, status=None, diag=None) -> None:
        """torch Adadelta: ``g += wd p``; ``v = rho v + (1 - rho) g^2``;
        ``d = sqrt(u + eps) / sqrt(v + eps) g``; ``u = rho u + (1 - rho) d^2``; ``p -= lr d``."""

    def adam(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, offsets, seg_scale,
             seg_decay, clip_value, seg_l1, l1_rule, lr, beta1, beta2, eps, step, decoupled, amsgrad,
             status=None, diag=None) -> None:
        """torch Adam / AdamW. Decay: AdamW (``decoupled``) ``p *= 1 - lr wd``, Adam
        ``g += wd p``. ``m = beta1 m + (1 - beta1) g``; ``v = beta2 v + (1 - beta2) g^2``;
        amsgrad: ``vmax = max(vmax, v)`` and ``v_hat = vmax`` else ``v_hat = v``;
        ``p -= lr / (1 - beta1^t) * m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps)``.
        ``max_exp_avg_sq`` is unused without amsgrad."""

    def nadam(self, params, grads, exp_avg, exp_avg_sq, offsets, seg_scale, seg_decay,
              clip_value, seg_l1, l1_rule, lr, beta1, beta2, eps, step, mu, mu_next, mu_product, status=None,
              diag=None) -> None:
        """torch NAdam, with the momentum schedule ``mu_t`` computed by the caller and
        ``mu_product = prod_{k<=t} mu_k``: ``g += wd p``; ``m``, ``v`` as in Adam;
        ``denom = sqrt(v / (1 - beta2^t)) + eps``;
        ``p -= lr (1 - mu) / (1 - mu_product) g / denom``;
        ``p -= lr mu_next / (1 - mu_product mu_next) m / denom``."""

    # ------------------------------------------------------------ constraints
    def max_norm(self, W, max_norm_value, status=None) -> None:
        """Keras ``MaxNorm(max_value=c, axis=0)`` on a weight matrix ``W`` (fan_in, fan_out),
        in place: each column (a unit's incoming weights) is rescaled,

            n_j = sqrt(sum_i W[i, j]^2)      W[:, j] = W[:, j] * min(n_j, c) / (MAX_NORM_EPS + n_j)

        (Keras' formula, keras/src/constraints/constraints.py; its epsilon, 1e-7), so that
        ``n_j <= c`` after it; a column already within c is scaled by
        ``n_j / (MAX_NORM_EPS + n_j)``, a zero column stays zero. ``n_j`` and the factor are
        computed in float64 from the dtype's values (each column's sum in a fixed order:
        the same bits on every run), the product rounded once to the dtype. ``status``
        (guard_update's record, or None): when ``status[GUARD_SKIP] != 0`` nothing changes,
        as for the update it follows."""

    # ---------------------------------------------------- decisions of a step
    # What the trainer decides between the backward and the update, and the metrics it
    # keeps, are ops too: on the GPU a step then never waits for the host.
    def guard_update(self, total, sq_norms, clip_norm, clip_global_norm, step, sticky,
                     seg_scale, status) -> None:
        """Finite check and clip scales of update ``step`` (0-based), on the device.

        ``total[0]`` is the step's reduced loss, ``sq_norms`` (S,) float64 the squared
        norms of :meth:`grad_sq_norms`. In order:

        * an earlier bad step is recorded (``status[GUARD_BAD_STEP] != 0``):
          ``status[GUARD_SKIP] = 1`` and nothing else changes (the sticky flag: every
          later update is a no-op until the host reads and clears the record);
        * ``total[0]`` or ``sum(sq_norms)`` is NaN or Inf: ``status[GUARD_SKIP] = 1``
          and, when ``sticky``, ``status[GUARD_BAD_STEP] = step + 1`` and
          ``status[GUARD_REASON] = REASON_LOSS`` (the loss) or ``REASON_GRADIENT``;
        * otherwise ``status[GUARD_SKIP] = 0`` and ``seg_scale[s] = c_s * g`` with
          ``c_s = min(1, clip_norm / sqrt(sq_s))`` (1 where ``sq_s == 0``) and
          ``g = min(1, clip_global_norm / (sqrt(sum_s c_s^2 sq_s) + CLIP_NORM_EPS))``
          (torch ``clip_grad_norm_``); ``inf`` disables either clip (the scale is then 1).
        """

    def metric_sums(self, kind, threshold, scores, targets, sums) -> None:
        """Add a batch to a streaming metric: ``sums[0] += total``, ``sums[1] += count``.

        ``scores`` (N, K) are logits; ``targets`` class indices (N,) int64 or (N, K)
        rows of the scores' dtype; ``sums`` (2,) float64.

        * METRIC_ACCURACY: K > 1: rows where ``argmax(scores_i)`` (the first maximum)
          equals ``targets_i`` (or ``argmax(targets_i)`` for rows); K == 1:
          ``(scores_i > threshold) == (targets_i > 0.5)``; count: the rows kept.
        * METRIC_SQUARED_ERROR / METRIC_ABSOLUTE_ERROR: ``sum (x - t)^2`` / ``sum |x - t|``
          over (N, K) targets; count N K.
        * METRIC_CROSS_ENTROPY on logits: K > 1: ``-log softmax(x_i)[y_i]`` or
          ``-sum_k t_ik log softmax(x_i)_k``; K == 1: the sigmoid BCE of
          :meth:`binary_cross_entropy`; count: the rows kept.

        A class target outside [0, C), ``C = max(K, 2)`` (one output has the classes 0 and
        1), such as an ``ignore_index`` row, is skipped by accuracy and cross-entropy: it
        adds nothing to the total or the count (the cross-entropy is then the loss's mean
        over kept rows). Target rows are always kept. A batch of skipped rows only adds 0.
        """
