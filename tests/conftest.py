"""Shared fixtures: backends to test against the NumPy reference, dtypes, tolerances.

The CUDA parametrisations carry the ``gpu`` marker: ``pytest -m gpu`` runs exactly them,
and where no device answers they skip with kernels.cuda's reason (the missing piece).
"""
import importlib

import numpy as np
import pytest

import kernels.reference as reference

# Fast backends, each tested op by op against kernels.reference.
FAST_BACKENDS = [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.gpu)]

# Per-dtype tolerances for comparing a backend with the reference: float32 ops agree
# to a few units of rounding of their largest term, float64 far closer.
TOLERANCES = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-12)}


def load_backend(name):
    """Import kernels.<name>, or skip the test saying why it cannot run here.

    A missing dependency (numba, CuPy) or device skips; a module of the package itself
    that cannot be found is a bug, and fails.
    """
    try:
        module = importlib.import_module(f"kernels.{name}")
    except ImportError as error:
        if isinstance(error, ModuleNotFoundError) and (error.name or "").startswith("kernels"):
            raise
        pytest.skip(f"kernels.{name} cannot be imported here: {error}")
    unavailable = getattr(module, "unavailable_reason", lambda: None)()
    if unavailable:
        pytest.skip(f"kernels.{name}: {unavailable}")
    return module


@pytest.fixture(params=FAST_BACKENDS)
def fast(request):
    """A fast backend module (skipped where it cannot run)."""
    return load_backend(request.param)


@pytest.fixture
def ref():
    return reference


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


# Engine-level tests run on every backend that can run here, by engine backend name.
ENGINE_BACKENDS = [pytest.param("numpy"), pytest.param("numba"),
                   pytest.param("cupy", marks=pytest.mark.gpu)]


@pytest.fixture(params=ENGINE_BACKENDS)
def backend_name(request):
    """An engine backend name (skipped, saying why, where it cannot run)."""
    import engine
    from engine import backend

    try:
        backend.module(request.param)
    except engine.BackendUnavailable as error:
        pytest.skip(str(error))
    return request.param


def pytest_runtest_logreport(report):
    """Under MPI with several processes (tests/test_distributed_mpi.py), a test failing on
    one rank would leave the others waiting in their next collective for good: print
    the failure and end the whole job, which then exits non-zero."""
    import sys
    MPI = sys.modules.get("mpi4py.MPI")
    if report.failed and MPI is not None and MPI.Is_initialized() and MPI.COMM_WORLD.Get_size() > 1:
        rank = MPI.COMM_WORLD.Get_rank()
        print(f"\n{report.nodeid} failed on rank {rank}; aborting every rank\n{report.longreprtext}",
              file=sys.stderr, flush=True)
        MPI.COMM_WORLD.Abort(1)
