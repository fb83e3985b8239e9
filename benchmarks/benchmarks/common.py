"""Seeded data and workloads shared by the suites (append-only: changing a constant
changes what a benchmark's history measures)."""
import numpy as np

# The standard workloads of DESIGN.md: (layer sizes, batch size).
WORKLOADS = {
    "S": ([64, 128, 10], 64),
    "M": ([784, 512, 512, 10], 128),
}
N_BATCHES = 64  # distinct minibatches cycled: one reused batch is memorised and turns subnormal


def batches(sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_BATCHES, batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=(N_BATCHES, batch))
    return X, y


def fast_backends():
    import engine
    return [b for b in engine.available_backends() if b != "numpy"]
