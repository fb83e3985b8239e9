"""What the benchmarks run: the standard workloads of DESIGN.md and their seeded data.

One definition, imported by ``python -m engine bench`` and by the asv suite
(``benchmarks/``): changing a constant here changes what every benchmark's history
measures, so add rather than change.
"""
from __future__ import annotations

import numpy as np

# Training workloads: an MLP (ReLU, softmax-CE, AdamW, float32) of these layer sizes at
# this batch size.
WORKLOADS = {
    "S": ([64, 128, 10], 64),
    "M": ([784, 512, 512, 10], 128),
    "L": ([1024, 4096, 4096, 1000], 256),
}
# Distinct minibatches a benchmark cycles through: one reused batch is memorised, its
# gradients turn subnormal, and the CPU slows down on them.
N_BATCHES = 64


def batches(sizes, batch, dtype=np.float32, seed=0):
    """``N_BATCHES`` seeded minibatches: X (N_BATCHES, batch, sizes[0]) standard normal and
    class targets y (N_BATCHES, batch) in [0, sizes[-1])."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_BATCHES, batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], size=(N_BATCHES, batch))
    return X, y


def step_flops(sizes, batch):
    """FLOPs of one training step's GEMMs: forward, dW, and dX for all layers but the first."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    forward = sum(2 * batch * i * o for i, o in pairs)
    return 3 * forward - 2 * batch * pairs[0][0] * pairs[0][1]


def num_parameters(sizes):
    """Weights and biases of an MLP of these layer sizes."""
    return sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))


def segment_offsets(sizes):
    """Offsets (S + 1,) of the flat parameter buffer's segments, W then b per layer, as
    the model lays them out (what the optimizers and grad_sq_norms take)."""
    lengths = [n for i, o in zip(sizes[:-1], sizes[1:]) for n in (i * o, o)]
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
