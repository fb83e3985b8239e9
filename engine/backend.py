"""Backend selection: which kernels package ``engine`` runs on.

``auto`` resolves to ``cupy`` when CuPy imports and a CUDA device answers, else
``numba``; ``ENGINE_BACKEND`` sets the default.
"""
from __future__ import annotations

import importlib
import os
import sys
from functools import lru_cache

from .errors import BackendUnavailable

_MODULES = {"numpy": "kernels.reference", "numba": "kernels.cpu", "cupy": "kernels.cuda"}
_AUTO_ORDER = ("cupy", "numba")
_selected: str | None = None
MATMUL_PRECISIONS = ("highest", "high")
_matmul_precision = "highest"


def _check_name(name, argument):
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a string, one of 'auto', {', '.join(map(repr, _MODULES))}; got {type(name).__name__}")
    if name != "auto" and name not in _MODULES:
        raise ValueError(f"{argument} must be 'auto' or one of {', '.join(map(repr, _MODULES))}; got {name!r}")


@lru_cache(maxsize=None)
def _probe(name):
    """(module, None) when backend ``name`` can run here, else (None, the reason)."""
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as error:
        return None, f"{name}: {error}"
    reason = getattr(module, "unavailable_reason", lambda: None)()
    if reason:
        return None, f"{name}: {reason}"
    if hasattr(module, "set_matmul_precision"):
        module.set_matmul_precision(_matmul_precision)
    return module, None


def module(name: str):
    """The kernels module of backend ``name``; BackendUnavailable says why it cannot run."""
    _check_name(name, "backend")
    found, reason = _probe(_resolve(name))
    if found is None:
        raise BackendUnavailable(reason)
    return found


def _resolve(name):
    if name != "auto":
        return name
    for candidate in _AUTO_ORDER:
        if _probe(candidate)[0] is not None:
            return candidate
    return "numpy"


def available_backends() -> list[str]:
    """The backends that can run on this machine, e.g. ``["numpy", "numba"]``."""
    return [name for name in _MODULES if _probe(name)[0] is not None]


def set_backend(name: str) -> None:
    """Select the default backend: "auto", "numpy", "numba" or "cupy"."""
    module(name)
    global _selected
    _selected = _resolve(name)


def get_backend() -> str:
    """The resolved name of the default backend (never "auto")."""
    if _selected is None:
        name = os.environ.get("ENGINE_BACKEND", "auto")
        # Errors name the variable: the user never passed this name to a function.
        _check_name(name, "the environment variable ENGINE_BACKEND")
        try:
            set_backend(name)
        except BackendUnavailable as error:
            raise BackendUnavailable(f"ENGINE_BACKEND={name}: {error}") from None
    return _selected


def set_num_threads(n: int) -> None:
    """Threads of the CPU backend's compiled kernels and of its BLAS, planned together."""
    from .validation import number
    n = number(n, "n", low=1, integer=True)
    cpu = module("numba")
    import numba  # importable: the numba backend just loaded

    # Numba's pool has NUMBA_NUM_THREADS threads, fixed when it starts; its own error names neither n nor that.
    limit = numba.config.NUMBA_NUM_THREADS
    if n > limit:
        raise ValueError(f"n must be in [1, {limit}] (at most NUMBA_NUM_THREADS, the size of numba's thread pool); "
                         f"got {n}")
    cpu.set_num_threads(n)


def get_num_threads() -> int:
    """Threads the CPU backend's compiled kernels run on."""
    return module("numba").get_num_threads()


def set_float32_matmul_precision(precision: str) -> None:
    """PyTorch's switch for float32 GEMMs: "highest" computes them in float32; "high" lets
    the ``cupy`` backend use TF32 tensor cores (inputs rounded to a 10-bit mantissa,
    float32 accumulation). The CPU backends always compute in float32 and ignore it."""
    from .validation import one_of
    precision = one_of(precision, MATMUL_PRECISIONS, "precision")
    global _matmul_precision
    _matmul_precision = precision
    for module_name in _MODULES.values():  # backends imported already; later ones get it in _probe
        loaded = sys.modules.get(module_name)
        if hasattr(loaded, "set_matmul_precision"):
            loaded.set_matmul_precision(precision)


def get_float32_matmul_precision() -> str:
    """"highest" (the default) or "high": see :func:`set_float32_matmul_precision`."""
    return _matmul_precision
