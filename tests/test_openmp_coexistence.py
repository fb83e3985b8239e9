"""The numba backend beside PyTorch's OpenMP runtime (kernels.cpu.openmp), each case in a
fresh interpreter: which libgomp the process runs on, and the threading layer chosen.
Speed is in kernels/cpu/openmp.py's docstring, never asserted here."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs PyTorch")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_REPORT = """
import json, os, numba
from kernels.cpu import openmp
maps = {line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line}
print(json.dumps({"layer": numba.config.THREADING_LAYER, "global": openmp.global_gnu_runtime(),
                  "libgomps": sorted(maps), "wait_policy": os.environ.get("OMP_WAIT_POLICY")}))
"""


def _child(first, env=None):
    """What a fresh interpreter reports after running ``first`` and then importing the
    backend (_REPORT); without any OpenMP variable but those in ``env``."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER")}
    environment.update(env or {})
    script = f"{first}\nimport kernels.cpu\n{_REPORT}"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _torch_libgomp_first():
    """Skip unless this PyTorch puts a libgomp into the global scope when imported (Linux
    pip wheels do; other builds link Intel's or LLVM's runtime)."""
    found = _child("import torch", {"ENGINE_BLAS": "numpy"})
    if found["global"] is None:
        pytest.skip("this PyTorch loads no libgomp into the global scope")
    return found


def test_torch_first_owns_the_gnu_runtime_and_numba_leaves_it_to_openblas():
    found = _torch_libgomp_first()
    torch_dir = os.path.dirname(importlib.util.find_spec("torch").origin)
    assert found["global"].startswith(torch_dir)
    # that libgomp read its environment before ours: numba takes its sleeping pool
    assert found["layer"] == "workqueue"


def test_exported_wait_policy_keeps_the_openmp_layer_with_torch_first():
    _torch_libgomp_first()
    found = _child("import torch", {"ENGINE_BLAS": "numpy", "OMP_WAIT_POLICY": "PASSIVE"})
    assert found["layer"] == "omp"


def test_without_torch_numba_loads_its_libgomp_locally_with_a_passive_policy():
    found = _child("", {"ENGINE_BLAS": "numpy"})
    assert found["layer"] == "omp" and found["wait_policy"] == "PASSIVE"
    assert found["global"] is None


def test_torch_after_runs_on_the_libgomp_numba_loaded():
    # the pool starts (libgomp loads) when the layer is chosen, at import
    found = _child("import kernels.cpu\nimport torch", {"ENGINE_BLAS": "numpy"})
    assert found["layer"] == "omp"
    assert len(found["libgomps"]) == 1  # torch found it by its soname: one runtime, our settings


def test_mkl_keeps_one_pool_with_torch_first():
    from kernels.cpu import mkl
    if mkl.installed_library() is None:
        pytest.skip("MKL is not installed")
    _torch_libgomp_first()
    found = _child("import torch", {"ENGINE_BLAS": "mkl"})
    # MKL's GNU layer and numba's omp layer both bind to torch's libgomp: one pool
    assert found["layer"] == "omp"
