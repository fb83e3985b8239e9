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


def frozen_backward(dW, db, dslope) -> bool:
    """Whether :meth:`Backend.dense_backward`'s ``dW``, ``db``, ``dslope`` ask for a frozen
    layer's backward (all None); ValueError, naming them, for any other mix with a None."""
    if (dW is None) != (db is None):
        raise ValueError("dW, db: both arrays, or both None for a frozen layer; got dW "
                         f"{'None' if dW is None else 'an array'} and db {'None' if db is None else 'an array'}")
    if dW is None and dslope is not None:
        raise ValueError("dslope: must be None when dW and db are (a frozen layer's slopes are frozen too)")
    return dW is None


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
        contents. The arrays ``work`` touches must stay alive and in place while ``replay``
        is kept, and ``work`` must read nothing back to the host.
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

    # ----------------------------------------------------------------- losses
    # Each loss returns the reduced loss as a float (for NONE: the sum), writes the
    # per-sample losses torch returns with reduction="none" into ``losses`` and the
    # gradient of the reduced loss with respect to the predictions into ``grad``
    # (for NONE: the gradient of the sum). ``losses`` and ``grad`` may be None.
    # ``total`` (a float64 array of shape (1,), or None): when given, the reduced loss is
    # written to ``total[0]`` on the device and the op returns None, so that a step never
    # waits for the device to hand a float back.
    def softmax_cross_entropy(self, logits, targets, label_smoothing, ignore_index,
                              reduction, losses, grad, total=None) -> float | None:
        """Softmax cross-entropy on logits (N, K), torch ``cross_entropy`` semantics.

        With ``p = softmax(logits[i])`` and smoothing ``e``:
        class targets (N,) int64: ``t = (1 - e) * onehot(y_i) + e / K`` and rows with
        ``y_i == ignore_index`` contribute nothing; MEAN divides by the number of kept rows
        (none kept: the loss is NaN and the gradient 0, as in torch).
        Distribution targets (N, K): ``t = (1 - e) * targets[i] + e / K``; MEAN divides by N.
        ``loss_i = -sum_k t_k log p_k`` and ``d loss_i / d logits = p * sum_k t_k - t``.
        """

    def binary_cross_entropy(self, logits, targets, reduction, losses, grad, total=None) -> float | None:
        """Sigmoid BCE on logits, elementwise, same shapes:
        ``l = max(x, 0) - x t + log(1 + exp(-|x|))``, ``dl/dx = sigmoid(x) - t``;
        MEAN divides by the number of elements."""

    def mse(self, pred, targets, reduction, losses, grad, total=None) -> float | None:
        """``l = (x - t)^2`` elementwise, ``dl/dx = 2 (x - t)``; MEAN over all elements."""

    def huber(self, pred, targets, delta, reduction, losses, grad, total=None) -> float | None:
        """torch HuberLoss: with ``d = x - t``, ``l = d^2 / 2`` if ``|d| < delta`` else
        ``delta (|d| - delta / 2)``; ``dl/dx = clip(d, -delta, delta)``; MEAN over all."""

    # ------------------------------------------------------------- optimizers
    # Parameters, gradients and state are flat 1-D arrays of one length. The flat buffer
    # is cut into segments (one per W, b or prelu slope) by ``offsets`` (S + 1,) int64.
    # Every update first forms the effective gradient of element i in segment s:
    #     g = clip(grads[i], -clip_value, clip_value) * seg_scale[s]
    # (clip_value = inf disables clamping; seg_scale carries norm clipping), then applies
    # the optimizer with weight decay ``seg_decay[s]`` (0 where a segment is exempt).
    # ``grads`` is never written. Updates are in place; ``step`` counts from 1.
    # ``status`` (the record of :meth:`guard_update`, or None): when
    # ``status[GUARD_SKIP] != 0`` the update changes nothing, neither parameters nor state.
    # ``diag`` (S, 2) float64, or None (nothing more is done): the update's size per
    # segment, added in the same pass. With p the parameters before the update and p' after:
    #     diag[s, 0] += sum_{i in s} (p'_i - p_i)^2      diag[s, 1] += sum_{i in s} p_i^2
    # each term in float64 from the dtype's values (p' - p the change the update made,
    # weight decay included). A skipped update adds nothing. Summed over an epoch's updates,
    # ``sqrt(diag[s, 0] / diag[s, 1])`` is the update-to-weight ratio ||dW|| / ||W|| of
    # segment s (root mean squares over the updates).
    def grad_sq_norms(self, grads, offsets, clip_value, out, acc=None) -> None:
        """``out[s] = sum_{i in s} clip(grads[i], -clip_value, clip_value)^2`` (float64);
        ``acc`` (S,) float64, or None: when given, also ``acc[s] += out[s]`` (a sum over
        steps kept on the device)."""

    def sgd(self, params, grads, momentum_buf, offsets, seg_scale, seg_decay, clip_value,
            lr, momentum, dampening, nesterov, first_step, status=None, diag=None) -> None:
        """torch SGD: ``g += wd p``; with momentum ``buf = g`` on the first step else
        ``buf = momentum buf + (1 - dampening) g``; ``g = g + momentum buf`` (nesterov) or
        ``g = buf``; ``p -= lr g``. ``momentum_buf`` is unused when ``momentum == 0``."""

    def adagrad(self, params, grads, state_sum, offsets, seg_scale, seg_decay, clip_value,
                lr, eps, status=None, diag=None) -> None:
        """torch Adagrad: ``g += wd p``; ``sum += g^2``; ``p -= lr g / (sqrt(sum) + eps)``."""

    def rmsprop(self, params, grads, square_avg, grad_avg, momentum_buf, offsets, seg_scale,
                seg_decay, clip_value, lr, alpha, eps, momentum, centered, status=None,
                diag=None) -> None:
        """torch RMSprop: ``g += wd p``; ``v = alpha v + (1 - alpha) g^2``; centered:
        ``ga = alpha ga + (1 - alpha) g`` and ``avg = sqrt(v - ga^2) + eps``, else
        ``avg = sqrt(v) + eps``; momentum > 0: ``buf = momentum buf + g / avg``,
        ``p -= lr buf``; else ``p -= lr g / avg``."""

    def adadelta(self, params, grads, square_avg, acc_delta, offsets, seg_scale, seg_decay,
                 clip_value, lr, rho, eps, status=None, diag=None) -> None:
        """torch Adadelta: ``g += wd p``; ``v = rho v + (1 - rho) g^2``;
        ``d = sqrt(u + eps) / sqrt(v + eps) g``; ``u = rho u + (1 - rho) d^2``; ``p -= lr d``."""

    def adam(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, offsets, seg_scale,
             seg_decay, clip_value, lr, beta1, beta2, eps, step, decoupled, amsgrad,
             status=None, diag=None) -> None:
        """torch Adam / AdamW. Decay: AdamW (``decoupled``) ``p *= 1 - lr wd``, Adam
        ``g += wd p``. ``m = beta1 m + (1 - beta1) g``; ``v = beta2 v + (1 - beta2) g^2``;
        amsgrad: ``vmax = max(vmax, v)`` and ``v_hat = vmax`` else ``v_hat = v``;
        ``p -= lr / (1 - beta1^t) * m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps)``.
        ``max_exp_avg_sq`` is unused without amsgrad."""

    def nadam(self, params, grads, exp_avg, exp_avg_sq, offsets, seg_scale, seg_decay,
              clip_value, lr, beta1, beta2, eps, step, mu, mu_next, mu_product, status=None,
              diag=None) -> None:
        """torch NAdam, with the momentum schedule ``mu_t`` computed by the caller and
        ``mu_product = prod_{k<=t} mu_k``: ``g += wd p``; ``m``, ``v`` as in Adam;
        ``denom = sqrt(v / (1 - beta2^t)) + eps``;
        ``p -= lr (1 - mu) / (1 - mu_product) g / denom``;
        ``p -= lr mu_next / (1 - mu_product mu_next) m / denom``."""

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
