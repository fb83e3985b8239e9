"""Flat buffers: every parameter (W, b, ...) is a view into one array, every piece of layer
state (running statistics) a view into another.

The optimizer steps the parameter buffer in one kernel call; the state buffer is written by
the layers' forward ops and saved with the weights, never stepped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    """One parameter or state array: its layer, name, shape and place in its buffer."""

    layer: int
    kind: str  # "W", "b", "gamma", "beta", "slope"; "running_mean", "running_var" (state)
    shape: tuple
    offset: int  # in the parameter buffer, or in the state buffer when not ``trained``
    trained: bool = True

    @property
    def size(self):
        return math.prod(self.shape)  # Python ints: never wraps, as int64 np.prod would

    @property
    def is_vector(self):
        """Biases and other 1-D parameters, which ``decay_bias=False`` exempts from decay."""
        return len(self.shape) == 1


class Layout:
    """Where each layer's arrays live in the two flat buffers, in ``get_weights`` order.

    ``layer_segments``: per layer, its ``(kind, shape, trained)`` in get_weights order (what
    each layer's ``segments()`` declares). ``trained`` lists the parameter segments in buffer
    order, what the optimizer and the gradient norms index per segment; ``offsets`` (S + 1,)
    are their offsets. ``origin`` names what made the layers, for errors ("sizes [...]").
    """

    def __init__(self, layer_segments, origin="the layers"):
        segments, sizes = [], {True: 0, False: 0}
        for layer, declared in enumerate(layer_segments):
            for kind, shape, trained in declared:
                segments.append(Segment(layer, kind, tuple(shape), sizes[trained], trained))
                sizes[trained] += math.prod(shape)
        if max(sizes.values()) >= 2**63:
            raise ValueError(f"{origin} make {max(sizes.values()):,} parameters, more than int64 offsets can index")
        self.segments = tuple(segments)
        self.trained = tuple(s for s in segments if s.trained)
        self.size = sizes[True]
        self.state_size = sizes[False]
        self.offsets = np.array([s.offset for s in self.trained] + [self.size], dtype=np.int64)

    def views(self, params, state):
        """Views of ``params`` and ``state``, one per segment (get_weights order), shaped like
        the arrays they hold."""
        return [(params if s.trained else state)[s.offset:s.offset + s.size].reshape(s.shape)
                for s in self.segments]

    def trained_views(self, flat):
        """Views of a buffer laid out like the parameters (the gradients), one per trained segment."""
        return [flat[s.offset:s.offset + s.size].reshape(s.shape) for s in self.trained]

    def layer_views(self, params, state):
        """Per layer, a dict {kind: view} of its parameters and state."""
        layers = [{} for _ in range(1 + max((s.layer for s in self.segments), default=-1))]
        for segment, view in zip(self.segments, self.views(params, state)):
            layers[segment.layer][segment.kind] = view
        return layers

    def layer_grad_views(self, grads):
        """Per layer, a dict {kind: view} of its parameters' gradients in ``grads``."""
        layers = [{} for _ in range(1 + max((s.layer for s in self.segments), default=-1))]
        for segment, view in zip(self.trained, self.trained_views(grads)):
            layers[segment.layer][segment.kind] = view
        return layers
