"""What a measurement is held against, timed in the same process as the work itself.

* The GEMM floor of a training step: the same step's GEMMs (forward, dW, and dX for all
  layers but the first) alone, into preallocated outputs, cycling distinct inputs,
  through a backend's :meth:`~kernels.spec.Backend.matmul`: the BLAS its dense ops call.
  On a backend with graphs (CUDA) the GEMMs of each input are replayed as one graph, as
  the step's are. A step cannot beat it; its ratio to it is the step's overhead.
* The memory roof of memory-bound kernels: a backend's copy of 256 MB and its in-place
  ``p -= lr g`` (plain SGD) over 256 MB. On a GPU the copy reaches the memory's
  bandwidth; on a CPU the in-place stream is the truer roof (a copy's writes to fresh
  memory are read first, a third of its traffic uncounted: on 2 cores a copy measured
  24-27 GB/s, the in-place update 52 GB/s), so the better of the two is the roof.
"""
from __future__ import annotations

import numpy as np

from kernels import spec

from .. import backend as backend_module
from .timing import timer

ROOF_BYTES = 256 << 20
_DISTINCT_INPUTS = 4


def gemm_floor(backend, sizes, batch, reps, inner, dtype=np.float32):
    """Seconds per step of a workload's GEMMs through ``backend``'s matmul, one sample per
    rep (:func:`gemm_call`)."""
    return timer(backend)(gemm_call(backend, sizes, batch, dtype), reps, inner)


def gemm_call(backend, sizes, batch, dtype=np.float32):
    """A call of a workload's step's GEMMs through ``backend``'s matmul, cycling distinct
    inputs; the first GEMM is checked against NumPy's before the call is returned."""
    k = backend_module.module(backend)
    rng = np.random.default_rng(1)
    host_W = [rng.standard_normal((i, o)).astype(dtype) / np.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:])]
    host_X = [rng.standard_normal((_DISTINCT_INPUTS, batch, s)).astype(dtype) for s in sizes]
    Ws, Xs = [k.to_device(W, dtype) for W in host_W], [k.to_device(X, dtype) for X in host_X]
    outs = [k.empty((batch, o), dtype) for o in sizes[1:]]
    dWs = [k.empty(W.shape, dtype) for W in Ws]
    dXs = [k.empty((batch, i), dtype) for i in sizes[:-1]]

    k.matmul(Xs[0][0], Ws[0], outs[0])
    want = host_X[0][0].astype(np.float64) @ host_W[0]
    if not np.allclose(k.to_host(outs[0]), want, rtol=1e-3, atol=1e-3 * np.abs(want).max()):
        raise AssertionError(f"{backend}'s matmul disagrees with NumPy's: its GEMM floor would time a wrong GEMM")

    def gemms_of(c):
        def gemms():
            for layer, W in enumerate(Ws):
                k.matmul(Xs[layer][c], W, outs[layer])
            for layer in reversed(range(len(Ws))):
                k.matmul(Xs[layer][c].T, Xs[layer + 1][c], dWs[layer])
                if layer:
                    k.matmul(Xs[layer + 1][c], Ws[layer].T, dXs[layer])
        return gemms

    calls = [gemms_of(c) for c in range(_DISTINCT_INPUTS)]
    # A backend that replays a step's kernels as one graph (kernels.spec.Backend.capture:
    # CUDA) replays the floor's GEMMs the same way, or the floor would pay a launch per
    # GEMM that the step does not (the CPU backends record nothing: None).
    replays = [k.capture(call) for call in calls]
    if all(replays):
        calls = replays
    counter = [0]

    def cycle():
        counter[0] = (counter[0] + 1) % _DISTINCT_INPUTS
        calls[counter[0]]()

    return cycle


def copy_roof(backend, reps):
    """(bytes per call, seconds per call samples) of ``backend``'s copy of 256 MB, read
    and write counted."""
    k = backend_module.module(backend)
    src = k.to_device(np.ones(ROOF_BYTES // 4, np.float32), np.float32)
    dst = k.empty(src.shape, np.float32)
    k.copy_into(dst, src)
    if not (k.to_host(dst) == 1).all():
        raise AssertionError(f"{backend}'s copy_into copied wrong values")
    return 2 * ROOF_BYTES, timer(backend)(lambda: k.copy_into(dst, src), reps, 2)


def axpy_roof(backend, reps):
    """(bytes per call, samples) of ``p -= lr g`` in place over 256 MB by the backend's
    plain SGD step: 12 bytes an element (p read and written, g read)."""
    k = backend_module.module(backend)
    n = ROOF_BYTES // 4
    params = k.to_device(np.zeros(n, np.float32), np.float32)
    grads = k.to_device(np.ones(n, np.float32), np.float32)
    offsets = k.to_device(np.array([0, n]), np.int64)
    scale, decay = (k.to_device(np.array([x]), np.float64) for x in (1.0, 0.0))

    def axpy():
        k.sgd(params, grads, None, offsets, scale, decay, np.inf, None, spec.L1_GRADIENT, 0.5, 0.0, 0.0,
              False, False, False)

    axpy()
    if not (k.to_host(params) == -0.5).all():
        raise AssertionError(f"{backend}'s sgd step computed wrong values")
    return 12 * n, timer(backend)(axpy, reps, 2)
