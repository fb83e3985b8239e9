"""How the CUDA sources compile: one ``cupy.RawModule`` per ``.cu`` file of this folder.

Every kernel is a template over the element type, instantiated for ``float`` and
``double`` through NVRTC name expressions; each :class:`Source` lists the expressions its
file is compiled with. The same list is what CI compiles with NVRTC on machines without
a GPU (tests/test_cuda_sources.py), so every instance that can be launched is compiled
there. Compilation is lazy (at the first launch) and CuPy caches it on disk per device,
so importing this package works with CuPy installed and no device present.

Denormals: CuPy appends ``-ftz=true`` to every NVRTC compilation (after these options,
and NVRTC keeps the last), so float32 kernels flush subnormal values to zero on the
device, where the reference keeps them; results then differ from the reference only
below float32's smallest normal number (1.2e-38), inside every test's absolute
tolerance. float64 is unaffected.

Launching: CuPy passes a Python ``float`` as ``double`` and a Python ``int`` as a 64-bit
integer, whatever the kernel's parameter is, so every scalar argument is given as the
NumPy scalar of exactly the C type (:func:`scalar`).
"""
from __future__ import annotations

import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
# --fmad=false: no contraction of a * b + c into one fma, so that every kernel rounds as
# the NumPy reference does (two roundings) and agrees with it to float32 rounding; the
# kernels are bound by memory, not by arithmetic.
OPTIONS = ("-std=c++17", "--fmad=false", f"--include-path={HERE}")
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
VECTOR_BYTES = 16  # one fd::Pack access (common.cuh): float4 / double2, on buffers aligned to it

SOURCES: list[Source] = []  # every Source created, in import order


def instances(template):
    """The name expressions of a kernel template over float and double."""
    return tuple(f"{template}<{c_type}>" for c_type in C_TYPES.values())


class Source:
    """A ``.cu`` file of this folder and the name expressions it is compiled with."""

    def __init__(self, filename, name_expressions):
        self.path = HERE / filename
        self.name_expressions = tuple(name_expressions)
        self._module = None
        self._functions = {}
        SOURCES.append(self)

    @property
    def code(self):
        return self.path.read_text()

    def function(self, template, dtype=None):
        """The kernel ``template<T>`` for ``dtype`` (or the plain kernel ``template``)."""
        key = (template, dtype)
        found = self._functions.get(key)
        if found is None:
            import cupy

            if self._module is None:
                self._module = cupy.RawModule(code=self.code, options=OPTIONS,
                                              name_expressions=self.name_expressions)
            name = template if dtype is None else f"{template}<{C_TYPES[np.dtype(dtype)]}>"
            found = self._functions[key] = self._module.get_function(name)
        return found


def scalar(value, dtype):
    """``value`` as the NumPy scalar of ``dtype``, what CuPy passes as that C type."""
    return np.dtype(dtype).type(value)
