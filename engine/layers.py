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

    def forward(self, k, X, ws, training, key, alive=None):
        """``ws.Y`` from the device batch ``X``; dropout (in training only) from ``key``.
        ``alive``: dense_forward's flags of the units that fired, or None."""
        p = self.dropout if training else 0.0
        ws.key = key if p > 0.0 else 0
        act, params = self.activation, self.params
        k.dense_forward(X, params["W"], params["b"], act.code, act.param, params.get("slope"), p, ws.key,
                        ws.Z, ws.Y, alive)

    def backward(self, k, X, ws, trained, dX):
        """From ``ws.dY``: the gradients of this layer's parameters (when ``trained``; a frozen
        layer computes none) and ``dX``, the gradient with respect to its input ``X`` (when
        not None)."""
        act, params = self.activation, self.params
        grads = self.grads if trained else {}
        k.dense_backward(ws.dY, X, params["W"], ws.Z, act.code, act.param, params.get("slope"), self.dropout,
                         ws.key, ws.dY if self.linear else ws.Z, grads.get("W"), grads.get("b"),
                         grads.get("slope"), dX)

