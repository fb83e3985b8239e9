"""What ``Trainer.fit(..., diagnostics=True)`` logs per hidden layer and epoch.

Each quantity is computed by the fused kernels of a training step, in passes that read
the arrays anyway (kernels.spec: ``grad_sq_norms(..., acc)``, the optimizers' ``diag``,
``dense_forward(..., alive)``), kept on the device over the epoch and read once at its
end. Hidden layers are numbered from 1, as ``dense_1`` in ``MLP.summary()``; the output
layer is not a hidden layer and logs none of them. Training itself is unchanged, except
that on the numba backend the update kernel with these sums is compiled on its own, and
LLVM's fused multiply-adds may then round a parameter 1 ulp apart now and then.

* ``grad_norm/i``: the norm of the loss gradient of the layer's weight matrix ``W`` (its
  bias is left out, as in the ratio below), as the trainer's finite check reads it every
  step (after ``clip_value``'s clamp, before norm clipping): the root mean square over the
  epoch's steps, ``sqrt(sum_t ||g_t||^2 / T)``. A step whose gradient was not finite (one
  ``on_nonfinite="skip"`` skipped) makes it inf or NaN for that epoch.
* ``update_ratio/i``: ``||dW|| / ||W||``, the size of an update of ``W`` (the change the
  optimizer made, weight decay included) relative to ``W`` before it, as root mean squares
  over the epoch's updates: ``sqrt(sum_t ||W_t - W_(t-1)||^2 / sum_t ||W_(t-1)||^2)``.
  Around 1e-3 is healthy; far above, the learning rate is too high, far below, too low.
  Skipped updates count for nothing: NaN for a layer no update touched in the epoch (a
  frozen one, whose gradient norm is 0).
* ``dead/i``, ReLU layers only: the fraction of the layer's units whose activation was 0
  on every training row of the epoch (before dropout). Other activations log none: a unit
  of leaky_relu, elu, gelu... never stops passing gradients the way a ReLU unit stuck at 0
  does.
"""
from __future__ import annotations

import numpy as np

from kernels import spec


class EpochDiagnostics:
    """The device accumulators of one ``fit`` with diagnostics, for ``model``.

    ``update_sums`` (S, 2) is the optimizers' ``diag``, ``grad_sums`` (S,) grad_sq_norms'
    ``acc`` (both views of one float64 array, read in one transfer), ``alive`` one uint8
    array of flags per layer for dense_forward (None for a layer that is not ReLU).
    """

    def __init__(self, model):
        k, segments = model._k, model._layout.trained
        n_hidden = len(model.sizes) - 2
        n = len(segments)
        self._k = k
        self._weights = [(segment.layer + 1, s) for s, segment in enumerate(segments)
                         if segment.kind == "W" and segment.layer < n_hidden]
        self._sums = k.zeros(3 * n, np.float64)
        self.update_sums = self._sums[:2 * n].reshape(n, 2)
        self.grad_sums = self._sums[2 * n:]
        relu = [i for i in range(n_hidden) if model._layers[i].activation.code == spec.RELU]
        ends = np.cumsum([model.sizes[i + 1] for i in relu], dtype=np.int64)
        self._flags = k.zeros(int(ends[-1]) if relu else 0, np.uint8)
        self._units = [(i + 1, slice(int(end) - model.sizes[i + 1], int(end))) for i, end in zip(relu, ends)]
        self.alive = [None] * (n_hidden + 1)
        for i, (_, units) in zip(relu, self._units):
            self.alive[i] = self._flags[units]

    def names(self):
        """The names :meth:`logs` returns, in its order."""
        return ([f"grad_norm/{i}" for i, _ in self._weights] + [f"update_ratio/{i}" for i, _ in self._weights]
                + [f"dead/{i}" for i, _ in self._units])

    def reset(self):
        """Zero every accumulator: the start of an epoch."""
        self._k.copy_into(self._sums, np.zeros(self._sums.size))
        if self._flags.size:
            self._k.copy_into(self._flags, np.zeros(self._flags.size, np.uint8))

    def logs(self, steps):
        """{name: float} of an epoch of ``steps`` steps (the formulas of this module)."""
        sums = self._k.to_host(self._sums)
        n = sums.size // 3
        update, grad = sums[:2 * n].reshape(n, 2), sums[2 * n:]
        flags = self._k.to_host(self._flags) if self._flags.size else self._flags
        with np.errstate(divide="ignore", invalid="ignore"):  # W all 0 or no update: inf, NaN
            logs = {f"grad_norm/{i}": float(np.sqrt(grad[s] / steps)) for i, s in self._weights}
            logs.update({f"update_ratio/{i}": float(np.sqrt(update[s, 0]) / np.sqrt(update[s, 1]))
                         for i, s in self._weights})
        logs.update({f"dead/{i}": float(np.mean(flags[units] == 0)) for i, units in self._units})
        return logs

    @staticmethod
    def postfix(logs):
        """The progress bar's summary of ``logs``: the mean update ratio of the hidden
        layers, as ``update_ratio`` (the per-layer values are in the history)."""
        ratios = [value for name, value in logs.items() if name.startswith("update_ratio/")]
        return {"update_ratio": f"{np.mean(ratios):.1e}"} if ratios else {}
