"""fusedense's airspeed-velocity suite (``cd benchmarks && asv run``).

* bench_kernels: every op of kernels.spec.Backend alone, time and peak memory at the
  workload sizes S, M and L; the memory-bound kernels' share of the memory roof.
* bench_training: a training step of S, M and L, an epoch of fit and a predict on
  digits; step time over the GEMM floor; the demo's test loss and accuracy.
* bench_startup: importing engine, and the first step from an empty numba cache, each in
  a fresh interpreter.

Workloads and cases are engine.bench's, shared with ``python -m engine bench``.
"""
