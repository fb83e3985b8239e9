"""The CuPy CUDA backend.

Its kernels are not written yet; importing it says why it cannot run, so that
``engine.set_backend("cupy")`` raises ``engine.BackendUnavailable`` with that reason.
"""
try:
    import cupy
except ImportError as error:
    raise ImportError(f"CuPy is not installed ({error}); install it with pip install 'fusedense[cuda12]'") from None

name = "cupy"


def unavailable_reason():
    try:
        devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CuPy raises its own CUDARuntimeError when no driver answers
        return f"no CUDA device found ({error})"
    if devices == 0:
        return "no CUDA device found"
    return "the CUDA kernels are not implemented yet"
