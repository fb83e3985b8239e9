"""A training step's forward, loss, backward and gradient norms replayed as one device graph.

On a GPU a small model's step is bound by dispatch: a dozen short kernels and GEMMs, each
a few microseconds of launch overhead on the host. The first part of a step, from the
forward to the gradient norms, takes the same arguments at every step of one batch shape
(the model's buffers, the workspace of that batch size, the trainer's norm buffer, the
penalties' coefficients, and the input buffers the batch is in: X, y and fit's row weights
when given), so it is recorded once
per batch shape with the backend's ``capture`` (kernels.spec.Backend.capture) and replayed in one launch. The
finite check and the update, whose arguments change at every step (the update's index,
the learning rate), follow it as two launches, and one copies the loss into its slot of
the trainer's record: 4 launches per step instead of about 4 per layer plus 5. fit's
input noise and mixup (engine.augmentation), whose keys and draws change at every step,
run before it, op by op, into buffers the recording copies from.

A batch shape's first step runs op by op: it compiles the kernels and allocates the
workspace and the ops' scratch, which a recording must not do. Its second step records.
A model keeps the buffers of a few batch sizes; where it let a recorded batch size's go
(other sizes came in between) and made new ones, that batch size is recorded again.

Steps run op by op, unrecorded, where a replay would go wrong or the backend has no
graphs (the CPU backends): with dropout (its mask keys change at every step), with
``fit(diagnostics=True)`` (per-epoch buffers), and on CPU backends (their ``capture``
returns None). A recording is made for the trainer's settings at the time (the loss
object, ``clip_value``, the penalties, the frozen layers); one is made again when they
change.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

_MAX_GRAPHS = 4  # batch shapes kept recorded: training, a last partial batch, ...


class _Recording:
    """One batch shape's replay, with the input and loss buffers it reads and writes."""

    def __init__(self, trainer, X, y, weights=None):
        k = trainer.model._k
        self._k = k
        self.X, self.y, *rest = trainer._graph_inputs(X, y, *(() if weights is None else (weights,)))
        self.weights = rest[0] if rest else None
        self.total = k.zeros(1, np.float64)
        self.logits = None
        self.loss = trainer.loss  # kept, so that the id in the key is not another object's

        def work():
            self.logits = trainer._forward_backward(self.X, self.y, self.total, weights=self.weights)

        self.replay = k.capture(work)
        self._model = trainer.model
        # The model's buffers of this batch size, which the graph writes into. Held, so that
        # their memory stays this recording's if the model lets them go (it keeps a few
        # batch sizes' buffers), and compared by current() with the model's buffers now.
        self._workspace = self._model._workspace(self.X.shape[0])

    def current(self):
        """Whether the model still computes this batch size in the buffers recorded: false
        once it let them go and made new ones, which the graph would not write."""
        return self._model._workspace(self.X.shape[0]) is self._workspace

    def run(self, X, y, total, weights=None):
        """Forward, loss into ``total[0]``, backward and norms of the batch (X, y) with row
        ``weights`` (None when recorded without); the logits."""
        k = self._k
        for source, into in ((X, self.X), (y, self.y), (weights, self.weights)):
            if source is not into:
                k.copy_into(into, source)
        self.replay()
        k.copy_into(total, self.total)
        return self.logits


class StepGraphs:
    """A trainer's recordings, one per batch shape and settings (see the module's docstring)."""

    def __init__(self, trainer):
        self._trainer = trainer
        self._recordings = OrderedDict()  # key -> _Recording, or None: that key runs op by op
        self._warmed_up = set()  # keys whose first step ran op by op

    def _key(self, X, y, weights):
        """What a recording depends on, or None when a step of this kind is never recorded."""
        trainer = self._trainer
        model = trainer.model
        if trainer._diagnostics is not None or any(layer.dropout > 0.0 for layer in model._layers):
            return None
        return (X.shape, X.dtype, y.shape, y.dtype, weights is not None, model._frozen, trainer.clip_value,
                id(trainer.loss), trainer.penalties.settings())

    def forward_backward(self, X, y, total, weights=None):
        """The trainer's ``_forward_backward(X, y, total, weights=weights)``, replayed where it can be."""
        trainer = self._trainer
        key = self._key(X, y, weights)
        if key is None:
            return trainer._forward_backward(X, y, total, weights=weights)
        stale = self._recordings.get(key)
        if stale is not None and not stale.current():
            del self._recordings[key]  # recorded again below, into the model's new buffers
        if key not in self._recordings:
            if key not in self._warmed_up:
                self._warmed_up.add(key)
                return trainer._forward_backward(X, y, total, weights=weights)
            recording = _Recording(trainer, X, y, weights)
            if len(self._recordings) >= _MAX_GRAPHS:
                self._recordings.popitem(last=False)
            self._recordings[key] = recording if recording.replay is not None else None
        else:
            self._recordings.move_to_end(key)
        recording = self._recordings[key]
        if recording is None:
            return trainer._forward_backward(X, y, total, weights=weights)
        return recording.run(X, y, total, weights)
