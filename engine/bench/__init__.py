"""``python -m engine bench``: the standard workloads, timed as ratios measured in one run.

Training workloads (:mod:`.workloads`: MLP, ReLU, softmax-CE, AdamW, float32, cycling
64 distinct random minibatches) report the time per step, GFLOP/s, and its ratio to the
GEMM floor (:mod:`.floors`): the same step's GEMMs timed alone into preallocated
outputs, in the same process, through the BLAS the backend calls (numba's may be MKL
for large GEMMs, cuBLAS on ``cupy``), and to NumPy's BLAS floor, the one every CPU
provider can be held to. Memory-bound kernels (:mod:`.cases`, one case per op of the
backend interface) report GB/s and their share of the memory roof measured first.
Every kernel is checked against the NumPy reference before it is timed.

Peers (:mod:`.peers`): PyTorch (eager, fused AdamW), JAX (jit) and scikit-learn's
MLPClassifier (an epoch of S), each in a process of its own (:mod:`.worker`,
:mod:`.runner`), held against the floors fusedense measured. Device work is timed with
CUDA events (:mod:`.timing`). Outputs (:mod:`.report`): a table, ``--json``, ``--csv``
(one line per figure with p20/p50/p80) and ``--plot`` (the ``plot`` extra).
"""
from .runner import run
from .workloads import WORKLOADS

__all__ = ["WORKLOADS", "run"]
