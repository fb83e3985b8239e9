"""The layers of an MLP: each owns its parameter and state segments, its workspace arrays
and the backend ops it calls.

The model keeps every layer's parameters in one flat buffer (one optimizer launch per step)
and its state in another; a layer declares its arrays (:meth:`Dense.segments`), gets views
of them (:meth:`Dense.bind`), allocates what a batch of ``n`` rows needs
(:meth:`Dense.workspace`) and runs its forward and backward as ops of the backend. A new
kind of layer is a class here with those methods, plus its ops in ``kernels/``.
"""
from __future__ import annotations

import numpy as np

from kernels import spec

from . import initializers


class LayerWorkspace:
    """A layer's arrays for one batch size: ``Z`` its pre-activation (overwritten by dZ in
    the backward), ``Y`` its output (``Z`` itself for a linear layer without dropout),
    ``dY`` the gradient with respect to ``Y``, and ``key`` the dropout key of the last
    training forward, which the backward regenerates the mask from."""

    def __init__(self, k, n, width, dtype, separate_output):
        self.Z = k.empty((n, width), dtype)
        self.Y = k.empty((n, width), dtype) if separate_output else self.Z
        self.dY = k.empty((n, width), dtype)
        self.key = 0


class Dense:
    """``Y = dropout(act(X @ W + b))`` (kernels.spec ``dense_forward``/``dense_backward``):
    ``W`` (fan_in, fan_out), ``b`` (fan_out,), and a PReLU's learnable ``slope`` (fan_out,)."""

    min_training_rows = 1  # the smallest batch this layer can train on

    def __init__(self, fan_in, fan_out, activation, dropout):
        self.fan_in, self.fan_out = fan_in, fan_out
        self.activation = activation
        self.dropout = dropout
        self.params = None  # {kind: view} of the parameters and state, after bind()
        self.grads = None  # {kind: view} of the parameters' gradients

    def segments(self):
        """This layer's arrays in ``get_weights`` order: (kind, shape, trained)."""
        declared = [("W", (self.fan_in, self.fan_out), True), ("b", (self.fan_out,), True)]
        if self.activation.learnable:
            declared.append(("slope", (self.fan_out,), True))
        return declared

    def initial_value(self, kind, rng, init, bias_init):
        """The initial values of segment ``kind``: W from ``init``, b from ``bias_init`` (drawn
        from ``rng``), a PReLU slope at the activation's initial value."""
        shape = (self.fan_in, self.fan_out) if kind == "W" else (self.fan_out,)
        if kind == "W":
            return initializers.draw(init, rng, shape, self.fan_in, self.fan_out)
        if kind == "b":
            return initializers.draw(bias_init, rng, shape, self.fan_in, self.fan_out)
        if kind == "slope":
            return np.full(shape, self.activation.init)
        raise ValueError(f"a dense layer has no segment {kind!r}")

    def bind(self, params, grads):
        """Take the views of this layer's segments in the model's buffers: ``params`` (kind ->
        view of the parameter or state buffer) and ``grads`` (kind -> gradient view)."""
        self.params, self.grads = params, grads

    @property
    def linear(self):
        """The output is the pre-activation itself: identity activation and no dropout."""
        return self.activation.code == spec.IDENTITY and self.dropout == 0.0

    def workspace(self, k, n, dtype):
        return LayerWorkspace(k, n, self.fan_out, dtype, separate_output=not self.linear)

    def compiled_layer(self, describe):
        """This layer for a compiled training step (engine.compiled_steps): ``describe(fan_in,
        fan_out, activation code, activation parameter, dropout)``, or None where none can
        run it."""
        return describe(self.fan_in, self.fan_out, self.activation.code, self.activation.param, self.dropout)

    def forward(self, k, X, ws, training, key, alive=None):
        """``ws.Y`` from the device batch ``X``; dropout (in training only) from ``key``.
        ``alive``: dense_forward's flags of the units that fired, or None."""
        p = self.dropout if training else 0.0
        ws.key = key if p > 0.0 else 0
        act, params = self.activation, self.params
        k.dense_forward(X, params["W"], params["b"], act.code, act.param, params.get("slope"), p, ws.key,
                        ws.Z, ws.Y, alive)

    def constrain_max_norm(self, k, max_norm, status):
        """Keras MaxNorm on W's columns (kernels.spec ``max_norm``), unless ``status`` says
        the step's update was skipped."""
        k.max_norm(self.params["W"], max_norm, status)

    def backward(self, k, X, ws, trained, dX):
        """From ``ws.dY``: the gradients of this layer's parameters (when ``trained``; a frozen
        layer computes none) and ``dX``, the gradient with respect to its input ``X`` (when
        not None)."""
        act, params = self.activation, self.params
        grads = self.grads if trained else {}
        k.dense_backward(ws.dY, X, params["W"], ws.Z, act.code, act.param, params.get("slope"), self.dropout,
                         ws.key, ws.dY if self.linear else ws.Z, grads.get("W"), grads.get("b"),
                         grads.get("slope"), dX)


class NormalizedDense(Dense):
    """``Y = dropout(act(gamma * norm(X @ W + b) + beta))``: the GEMM by the backend's
    ``matmul``, then kernels.spec ``norm_forward`` as its epilogue (normalize, scale, shift,
    activation and dropout in one pass after the statistics); backward ``norm_backward``
    (with the column sums of db, dgamma and dbeta), then the two GEMMs.

    ``kind`` "batch": PyTorch BatchNorm1d (training normalizes by the batch's statistics
    and moves the running ones, ``running = (1 - 0.1) running + 0.1 batch`` with the
    unbiased variance; evaluation normalizes by the running ones). "layer": PyTorch
    LayerNorm over each row's units, the same in training and evaluation. eps 1e-5.
    """

    EPS = 1e-5
    MOMENTUM = 0.1
    KINDS = {"batch": spec.NORM_BATCH, "layer": spec.NORM_LAYER}

    def __init__(self, fan_in, fan_out, activation, dropout, kind):
        super().__init__(fan_in, fan_out, activation, dropout)
        self.kind = kind
        self.code = self.KINDS[kind]  # the kernels' code; MLP has checked the name
        # The unbiased running variance divides by N - 1: batch norm trains on 2 rows or more.
        self.min_training_rows = 2 if kind == "batch" else 1

    def segments(self):
        """W, b, gamma, beta, then batch norm's running_mean and running_var (state, not
        trained: Keras's order), then a PReLU slope."""
        declared = super().segments()
        unit = (self.fan_out,)
        normalization = [("gamma", unit, True), ("beta", unit, True)]
        if self.kind == "batch":
            normalization += [("running_mean", unit, False), ("running_var", unit, False)]
        return declared[:2] + normalization + declared[2:]

    def initial_value(self, kind, rng, init, bias_init):
        """gamma and running_var ones, beta and running_mean zeros, the rest as Dense."""
        if kind in ("gamma", "running_var"):
            return np.ones(self.fan_out)
        if kind in ("beta", "running_mean"):
            return np.zeros(self.fan_out)
        return super().initial_value(kind, rng, init, bias_init)

    @property
    def linear(self):
        return False  # Y = act(gamma xhat + beta) is never xhat, which Z holds

    def compiled_layer(self, describe):
        return None  # the compiled steps have no normalization

    def workspace(self, k, n, dtype):
        ws = super().workspace(k, n, dtype)
        ws.rstd = k.empty((self.fan_out,) if self.kind == "batch" else (n,), dtype)
        return ws

    def forward(self, k, X, ws, training, key, alive=None):
        """Z = X @ W, then ``norm_forward`` writes xhat over Z, the 1 / std into ``ws.rstd``
        and Y; batch norm in training also moves the running statistics."""
        p = self.dropout if training else 0.0
        ws.key = key if p > 0.0 else 0
        act, params = self.activation, self.params
        k.matmul(X, params["W"], ws.Z)
        k.norm_forward(self.code, ws.Z, params["b"], params["gamma"], params["beta"], self.EPS, training,
                       self.MOMENTUM, params.get("running_mean"), params.get("running_var"), act.code, act.param,
                       params.get("slope"), p, ws.key, ws.Z, ws.rstd, ws.Y, alive)

    def backward(self, k, X, ws, trained, dX):
        """``norm_backward`` writes dZ over xhat (and the column sums), then dW = X.T @ dZ
        (when trained) and dX = dZ @ W.T (when asked for)."""
        act, params = self.activation, self.params
        grads = self.grads if trained else {}
        k.norm_backward(self.code, ws.dY, ws.Z, params["gamma"], params["beta"], ws.rstd, act.code,
                        act.param, params.get("slope"), self.dropout, ws.key, ws.Z, grads.get("b"),
                        grads.get("gamma"), grads.get("beta"), grads.get("slope"))
        if trained:
            k.matmul(X.T, ws.Z, grads["W"])
        if dX is not None:
            k.matmul(ws.Z, params["W"].T, dX)
