"""Flat parameter buffers: every W, b and prelu slope is a view into one array."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    """One parameter: its place in the flat buffer and its shape."""

    layer: int
    kind: str  # "W", "b" or "slope"
    shape: tuple
    offset: int

    @property
    def size(self):
        return math.prod(self.shape)  # Python ints: never wraps, as int64 np.prod would

    @property
    def is_vector(self):
        """Biases and other 1-D parameters, which ``decay_bias=False`` exempts from decay."""
        return len(self.shape) == 1


class Layout:
    """Where each parameter lives in the flat buffer, in ``get_weights`` order."""

    def __init__(self, sizes, learnable_slopes):
        segments, offset = [], 0
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            shapes = [("W", (fan_in, fan_out)), ("b", (fan_out,))]
            if learnable_slopes[layer]:
                shapes.append(("slope", (fan_out,)))
            for kind, shape in shapes:
                segments.append(Segment(layer, kind, shape, offset))
                offset += math.prod(shape)
        if offset >= 2**63:
            raise ValueError(f"sizes {list(sizes)} make {offset:,} parameters, more than int64 offsets can index")
        self.segments = tuple(segments)
        self.size = offset
        self.offsets = np.array([s.offset for s in segments] + [offset], dtype=np.int64)

    def views(self, flat):
        """Views of ``flat``, one per segment, shaped like the parameters."""
        return [flat[s.offset:s.offset + s.size].reshape(s.shape) for s in self.segments]

    def layer_views(self, flat):
        """Per layer, a dict {"W": view, "b": view, "slope": view or None}."""
        layers = {}
        for segment, view in zip(self.segments, self.views(flat)):
            layers.setdefault(segment.layer, {"slope": None})[segment.kind] = view
        return [layers[i] for i in sorted(layers)]
