"""CUDA graphs: a sequence of ops recorded once and replayed in one launch (kernels.spec.capture).

A small model's step is a dozen short kernels and GEMMs, each costing a few microseconds
of launch overhead on the host; replaying them as one graph costs one launch. CuPy
records what is queued on a stream between ``Stream.begin_capture`` and ``end_capture``
(nothing runs while it records) and returns a graph that can be launched on any stream.

* The recording is made on a non-blocking stream of its own, so that no implicit
  synchronisation with the legacy default stream (which other CuPy calls may use) can
  invalidate it; every replay goes on the caller's current stream, ordered with the
  rest of its work.
* A replay passes the arguments of the recording again: the same arrays (it reads their
  current values) and the same scalars. Whatever changes from step to step must therefore
  be an array's contents, not a launch argument. The replay holds the recorded work, so
  the arrays that work refers to stay allocated as long as the replay does.
* An allocation from CuPy's memory pool while recording would be a block the graph keeps
  writing to after CuPy has handed it to another array. The ops allocate their scratch
  once, at their first eager call (a warm-up); a memory hook watches the recording and a
  graph that allocated is discarded, with a warning, instead of replayed.
"""
from __future__ import annotations

import warnings

import cupy

_streams = {}  # device id -> the non-blocking stream recordings are made on


class _Allocations(cupy.cuda.MemoryHook):
    """Counts the allocations from CuPy's memory pool while it is entered."""

    name = "fusedense.graph_capture"

    def __init__(self):
        self.count = 0

    def malloc_preprocess(self, **kwargs):
        self.count += 1


def _capture_stream():
    device = cupy.cuda.runtime.getDevice()
    stream = _streams.get(device)
    if stream is None:
        stream = _streams[device] = cupy.cuda.Stream(non_blocking=True)
    return stream


def capture(work):
    """``work()``'s device work as one graph: a function that replays it on the current
    stream, or None (with a RuntimeWarning) when the recording allocated memory or CUDA
    refused it; the caller then runs ``work`` itself (see kernels.spec.Backend.capture)."""
    stream = _capture_stream()
    allocations = _Allocations()
    graph, failure = None, None
    with stream, allocations:
        stream.begin_capture()
        try:
            work()
        except Exception as error:  # noqa: BLE001 (any failure: the recording is unusable, and ending it below is still due)
            failure = error
        finally:
            try:
                graph = stream.end_capture()
            except Exception as error:  # noqa: BLE001 (CuPy raises its own CUDARuntimeError, e.g. capture invalidated)
                failure = failure or error
    if failure is not None:
        warnings.warn(f"a CUDA graph could not be recorded ({type(failure).__name__}: {failure}); "
                      "the step runs its kernels one by one instead", RuntimeWarning, stacklevel=2)
        return None
    if allocations.count:
        warnings.warn(f"a CUDA graph recording allocated device memory {allocations.count} time(s), which "
                      "a replay could not keep (a workspace evicted by other batch sizes, say); this "
                      "batch shape's steps run their kernels one by one instead", RuntimeWarning, stacklevel=2)
        return None
    return _Replay(graph, work)


class _Replay:
    """A recorded graph, launched on the current stream when called. It holds the recorded
    ``work``, and so the arrays ``work`` refers to: a graph keeps their addresses, and
    one replayed after CuPy's pool had taken an array back would write into whatever
    array the pool handed that memory to next."""

    def __init__(self, graph, work):
        self._graph, self._work = graph, work

    def __call__(self):
        self._graph.launch()
