"""``python -m engine bench``: its rows and the ratios it derives from them (what the
figures are made of, never how fast anything is: these machines are shared)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import bench

ROOT = Path(__file__).resolve().parent.parent


def test_step_flops_counts_forward_dw_and_dx_but_the_first_layers_dx():
    # 3-5-2 at batch 4: forward 2*4*(3*5 + 5*2) = 200; dW the same; dX of layer 2 only: 80
    assert bench.step_flops([3, 5, 2], 4) == 200 + 200 + 2 * 4 * 5 * 2


@pytest.fixture(scope="module")
def rows():
    from engine.backend import available_backends
    backends = [b for b in ("numpy", "numba") if b in available_backends()]
    result = subprocess.run([sys.executable, "-m", "engine", "bench", "--workloads", "S", "--reps", "1",
                             "--no-peers", "--json", "--backends", ",".join(backends)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), backends


def test_training_rows_are_ratios_to_the_floors_of_the_same_run(rows):
    rows, backends = rows
    by_provider = {r["provider"]: r for r in rows if r["workload"] == "S"}
    numpy_floor = by_provider["GEMM floor NumPy"]["median_ms"]
    for backend in backends:
        row = by_provider[backend]
        own = [r for name, r in by_provider.items() if name.startswith("GEMM floor ")
               and name != "GEMM floor NumPy"]
        floor = own[0]["median_ms"] if backend == "numba" and own else numpy_floor
        assert row["ratio"] == pytest.approx(row["median_ms"] / floor)
        assert row["numpy_ratio"] == pytest.approx(row["median_ms"] / numpy_floor)
        assert row["gflops"] == pytest.approx(bench.step_flops(*bench.WORKLOADS["S"]) / row["median_ms"] / 1e6)
        assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]


def test_kernel_rows_are_shares_of_the_better_roof(rows):
    rows, backends = rows
    if "numba" not in backends:
        pytest.skip("kernel rows are for the compiled backends")
    kernels = {r["workload"]: r for r in rows if r["provider"] == "numba" and r["workload"] not in bench.WORKLOADS}
    roof = max(kernels["copy 256MB"]["gbps"], kernels["axpy 256MB in place"]["gbps"])
    assert {"AdamW 16M", "softmax-CE 1024x1000", "dropout mask 1024x4096"} <= set(kernels)
    for name, row in kernels.items():
        assert row["ratio"] == pytest.approx(row["gbps"] / roof), name
    adamw = kernels["AdamW 16M"]
    assert adamw["gbps"] == pytest.approx(28 * (16 << 20) / adamw["median_ms"] / 1e6, rel=1e-6)
