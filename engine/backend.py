"""Backend selection: which kernels package ``engine`` runs on.

``auto`` resolves to ``cupy`` when CuPy imports and a CUDA device answers, else
``numba``; ``ENGINE_BACKEND`` sets the default.
"""
from __future__ import annotations

import importlib
import os
from functools import lru_cache

from .errors import BackendUnavailable

_MODULES = {"numpy": "kernels.reference", "numba": "kernels.cpu", "cupy": "kernels.cuda"}
_AUTO_ORDER = ("cupy", "numba")
_selected: str | None = None


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
    return (None, f"{name}: {reason}") if reason else (module, None)


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
        set_backend(os.environ.get("ENGINE_BACKEND", "auto"))
    return _selected


def set_num_threads(n: int) -> None:
    """Threads of the CPU backend's compiled kernels and of its BLAS, planned together."""
    from .validation import number
    n = number(n, "n", low=1, integer=True)
    module("numba").set_num_threads(n)


def get_num_threads() -> int:
    """Threads the CPU backend's compiled kernels run on."""
    return module("numba").get_num_threads()
