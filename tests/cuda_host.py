"""Build the device math of kernels/cuda as host C++, for tests against the reference.

The scalar functions of ``kernels/cuda/*.cuh`` are ``__host__ __device__`` (see
``common.cuh``), so a small C++ file of test entry points (``extern "C"`` loops over
arrays) that includes them compiles with the system compiler into a shared library that
ctypes loads. Tests that use it skip, saying why, where no C++ compiler is found.
"""
import ctypes
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

CUDA_DIR = pathlib.Path(__file__).resolve().parents[1] / "kernels" / "cuda"
_built = {}


def compiler():
    """The C++ compiler to use, or None."""
    return shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def build(source, tmp_path_factory):
    """ctypes.CDLL of ``source`` (a .cpp beside this file), compiled once per session.

    -ffp-contract=off keeps a * b + c as two roundings, as NumPy computes it (g++ would
    otherwise fuse it into an fma on machines that have one); -fno-fast-math is the default
    and is spelt out because the finiteness checks rely on IEEE NaN and Inf.
    """
    if source in _built:
        return _built[source]
    cxx = compiler()
    if cxx is None:
        pytest.skip("no C++ compiler (c++, g++ or clang++) on PATH to build the device math on the host")
    out = tmp_path_factory.mktemp("cuda_host") / (pathlib.Path(source).stem + ".so")
    command = [cxx, "-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC",
               f"-I{CUDA_DIR}", str(pathlib.Path(__file__).parent / source), "-o", str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), \
        f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    _built[source] = ctypes.CDLL(str(out))
    return _built[source]


def pointer(array):
    """A ctypes pointer to a C-contiguous array's data."""
    assert array.flags.c_contiguous
    return array.ctypes.data_as(ctypes.c_void_p)


def call(library, name, *args):
    """Call ``name`` with arrays passed as pointers and Python numbers as int64 or double."""
    converted = []
    for a in args:
        if isinstance(a, np.ndarray):
            converted.append(pointer(a))
        elif isinstance(a, (bool, int, np.integer)):
            converted.append(ctypes.c_int64(int(a)))
        else:
            converted.append(ctypes.c_double(float(a)))
    getattr(library, name)(*converted)
