"""The CuPy CUDA backend: every op of :mod:`kernels.spec` for CuPy arrays.

All CUDA C lives in the ``.cu``/``.cuh`` files of this folder, compiled by NVRTC through
``cupy.RawModule`` at the first launch (:mod:`kernels.cuda.compiler`); GEMMs call the
cuBLAS library CuPy loads (:mod:`kernels.cuda.gemm`). Importing needs CuPy only, not a
device: :func:`unavailable_reason` then says which piece is missing (driver, device,
NVRTC, cuBLAS), and the engine turns it into ``engine.BackendUnavailable``.
"""
try:
    import cupy
except ImportError as error:
    raise ImportError(f"CuPy is not installed ({error}); install it with pip install "
                      "'fusedense[cuda12]' (CUDA 12) or 'fusedense[cuda13]' (CUDA 13)") from None

from .arrays import all_finite, copy_into, empty, take_rows, to_device, to_host, zeros  # noqa: E402
from .augment import gaussian_noise, mix_class_targets, mix_rows  # noqa: E402
from .constraints import max_norm  # noqa: E402
from .graphs import capture  # noqa: E402
from .decisions import guard_update, metric_sums  # noqa: E402
from .dense import apply_output, dense_backward, dense_forward, dropout_mask  # noqa: E402
from . import gemm  # noqa: E402
from .gemm import matmul  # noqa: E402
from .losses import binary_cross_entropy, huber, mse, softmax_cross_entropy  # noqa: E402
from .norm import norm_backward, norm_forward  # noqa: E402
from .optim import adadelta, adagrad, adam, grad_sq_norms, nadam, rmsprop, sgd  # noqa: E402
from .precision import get_matmul_precision, set_matmul_precision  # noqa: E402

name = "cupy"
gemm_library = "cuBLAS"


def unavailable_reason():
    """None when this backend can run here, else which piece is missing."""
    try:
        driver = cupy.cuda.runtime.driverGetVersion()
    except Exception as error:  # CuPy raises its own CUDARuntimeError
        return f"no CUDA driver answers ({error}); install the NVIDIA driver"
    if driver == 0:
        return "no CUDA driver is installed; install the NVIDIA driver"
    try:
        devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        return f"no CUDA device found ({error})"
    if devices == 0:
        return "no CUDA device found"
    try:
        cupy.cuda.nvrtc.getVersion()
    except Exception as error:
        return (f"NVRTC, the CUDA runtime compiler, cannot be loaded ({error}); install "
                "'fusedense[cuda12]' or the nvidia-cuda-nvrtc wheel of your CUDA version")
    try:
        from cupy_backends.cuda.libs import cublas
        cublas.getVersion(cupy.cuda.device.get_cublas_handle())
        gemm.library()
    except Exception as error:
        return f"cuBLAS cannot be loaded ({error}); install the nvidia-cublas wheel of your CUDA version"
    return None
