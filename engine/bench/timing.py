"""Timing: samples of seconds per call, on the host clock or by CUDA events.

Each sample is the mean over ``inner`` back-to-back calls (so that calls shorter than the
clock's resolution add up to a measurable time); a benchmark reports percentiles over
``reps`` samples. The first call is made untimed (compilation, workspaces).
:func:`interleaved` takes the samples of several calls in turn, so that a ratio of two
of them (a step over its GEMM floor) is taken sample by sample, side by side in time.
"""
from __future__ import annotations

import time

import numpy as np


def host_timed(fn, reps, inner, sync=None, warm=True):
    """Seconds per call of ``fn``, one sample per rep, each the mean over ``inner`` calls,
    after an untimed call unless not ``warm``.

    ``sync`` waits for work ``fn`` queued on a device (a host op returns when done)."""
    if warm:
        fn()
    sync = sync or (lambda: None)
    samples = []
    for _ in range(reps):
        sync()
        began = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - began) / inner)
    return samples


def cuda_timed(fn, reps, inner, warm=True):
    """:func:`host_timed` for work on CuPy's current stream, measured by CUDA events
    (what the device spent, without the host's wait for the last event)."""
    import cupy

    if warm:
        fn()
    samples = []
    for _ in range(reps):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        samples.append(cupy.cuda.get_elapsed_time(start, end) / 1e3 / inner)
    return samples


def timer(backend):
    """The timing function for ``backend``'s ops: host clock, or CUDA events for cupy."""
    return cuda_timed if backend == "cupy" else host_timed


def interleaved(calls, reps):
    """Samples of each of ``calls`` ((timing function, fn, inner) triples, the timing
    function :func:`host_timed` or :func:`cuda_timed`), one sample of each in turn, rep
    after rep, after an untimed call of each: a busy spell of a shared machine then falls
    on the calls of one round alike, and the ratio of two calls' samples of one round
    moves far less than the ratio of their medians taken minutes apart. Returns a list of
    samples per call."""
    for _, fn, _ in calls:
        fn()
    found = [[] for _ in calls]
    for _ in range(reps):
        for samples, (time_calls, fn, inner) in zip(found, calls):
            samples += time_calls(fn, 1, inner, warm=False)
    return found


def inner_calls(seconds_per_call, target=0.02):
    """Calls per sample so that a sample lasts about ``target`` seconds (at least one)."""
    return max(1, int(target / max(seconds_per_call, 1e-9)))


def percentiles(samples):
    """(p20, p50, p80) of ``samples``: the spread a report shows beside the median."""
    return tuple(float(x) for x in np.percentile(samples, (20, 50, 80)))
