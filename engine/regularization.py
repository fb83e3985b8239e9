"""The Trainer's penalties and constraints (API.md "Regularization and constraints").

``l2`` and ``l1`` act on weight matrices only (never biases, PReLU slopes or normalization
parameters) and on trained layers only. Their gradients join the loss gradient inside
the gradient-norm pass, which also adds their value to the step's loss
(kernels.spec ``grad_sq_norms``), before clipping; ``l1_update="clipped"`` or
``"proximal"`` instead apply L1 after the optimizer's step, inside its kernel
(``seg_l1``, ``l1_rule``); ``max_norm`` rescales each unit's incoming weights after
every update (``max_norm``).
"""
from __future__ import annotations

import numpy as np

from kernels import spec

from .validation import number, one_of

L1_RULES = {"gradient": spec.L1_GRADIENT, "clipped": spec.L1_CLIPPED, "proximal": spec.L1_PROXIMAL}


class Penalties:
    """A trainer's ``l2``, ``l1``, ``l1_update`` and ``max_norm``, and the per-segment
    coefficients they make for a model's trained weights (made again when the frozen
    layers or the values change)."""

    def __init__(self, l2, l1, l1_update, max_norm):
        self.l2 = number(l2, "l2", low=0.0)
        self.l1 = number(l1, "l1", low=0.0)
        self.l1_update = one_of(l1_update, tuple(L1_RULES), "l1_update")
        self.max_norm = None if max_norm is None else number(max_norm, "max_norm", low=0.0, low_open=True)
        self._key = None  # (frozen layers, l1, l2) the coefficients were made for
        self._coefficients = None

    @property
    def active(self):
        """Whether the gradient-norm pass has a penalty to add."""
        return self.l1 > 0.0 or self.l2 > 0.0

    @property
    def l1_rule(self):
        return L1_RULES[self.l1_update]

    def coefficients(self, model):
        """(seg_l1, seg_l2): float64 device arrays with ``l1``, ``l2`` on the W of every
        trained layer and 0 elsewhere."""
        key = (model._frozen, self.l1, self.l2)
        if self._key != key:
            weights = np.array([s.kind == "W" and s.layer not in model._frozen for s in model._layout.trained])
            k = model._k
            self._coefficients = (k.to_device(np.where(weights, self.l1, 0.0), np.float64),
                                  k.to_device(np.where(weights, self.l2, 0.0), np.float64))
            self._key = key
        return self._coefficients

    def settings(self):
        """What a recorded step depends on (engine.step_graphs)."""
        return (self.l2, self.l1, self.l1_update)
