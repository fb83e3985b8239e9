"""``python -m engine bench`` (engine.bench): what its figures are made of, never how
fast anything is (these machines are shared): the cases and their checks against the
reference, the ratios derived from samples, the CSV and plot, the jobs and the CLI."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernels.cpu
from engine.bench import cases, report, runner, steps, timing, worker
from engine.bench.report import Row
from engine.bench.workloads import (
    WORKLOADS,
    num_parameters,
    segment_offsets,
    step_flops,
)

ROOT = Path(__file__).resolve().parent.parent


def test_step_flops_counts_forward_dw_and_dx_but_the_first_layers_dx():
    # 3-5-2 at batch 4: forward 2*4*(3*5 + 5*2) = 200; dW the same; dX of layer 2 only: 80
    assert step_flops([3, 5, 2], 4) == 200 + 200 + 2 * 4 * 5 * 2


def test_parameters_and_segments_follow_the_models_layout():
    import engine
    model = engine.MLP([3, 5, 2], seed=0, backend="numpy")
    assert num_parameters([3, 5, 2]) == model.num_parameters == 15 + 5 + 10 + 2
    np.testing.assert_array_equal(segment_offsets([3, 5, 2]), [0, 15, 20, 30, 32])


def test_every_op_of_the_backend_interface_has_a_case():
    from kernels import spec
    members = {name for name in vars(spec.Backend) if not name.startswith("_") and callable(vars(spec.Backend)[name])}
    assert set(cases.OPS) == members - set(cases.NOT_OPS) == set(cases.BUILDERS)


@pytest.mark.parametrize("op", cases.OPS)
def test_each_case_agrees_with_the_reference_on_the_fast_backend(op):
    case = cases.case(op, "numba", "S")
    case.check()
    case.call()  # and runs again on the same inputs, as a benchmark calls it


@pytest.mark.parametrize("op", ["adam", "dense_forward", "softmax_cross_entropy"])
def test_a_wrong_kernel_is_caught_before_it_is_timed(monkeypatch, op):
    right = getattr(kernels.cpu, op)

    def wrong(*args):
        right(*args)
        out = args[0] if op == "adam" else args[-1] if op == "dense_forward" else args[-2]
        out += 1e-2  # every element off by a little (in place: the array the case compares)
    monkeypatch.setattr(kernels.cpu, op, wrong)
    with pytest.raises(cases.KernelMismatch, match=op):
        cases.case(op, "numba", "S").check()


def test_case_sizes_follow_the_workload():
    dims = cases.workload_dims("M")
    assert (dims["batch"], dims["fan_in"], dims["fan_out"], dims["classes"]) == (128, 784, 512, 10)
    adam = cases.inputs("adam", "M")
    assert adam.bytes == 28 * num_parameters(WORKLOADS["M"][0])  # p, g, m, v read; p, m, v written
    assert cases.inputs("dense_forward", "L").flops == 2 * 256 * 4096 * 4096


def test_a_wrong_gradient_fails_the_training_step_check(monkeypatch):
    right = kernels.cpu.dense_backward

    def wrong(*args):
        right(*args)
        dW = args[10]
        dW *= 1.01  # one percent off
    steps.check_step("numba", *WORKLOADS["S"], compiled=False)
    monkeypatch.setattr(kernels.cpu, "dense_backward", wrong)
    with pytest.raises(AssertionError, match="gradient of parameter"):
        steps.check_step("numba", *WORKLOADS["S"], compiled=False)


def test_a_wrong_compiled_step_fails_the_training_step_check(monkeypatch):
    """The check runs the step a benchmark times: the compiled one (engine.compiled_steps),
    here moving the first weight matrix one percent of its update too far."""
    from kernels.cpu import steps as cpu_steps
    right = cpu_steps.compiled

    def compiled(*args):
        function = right(*args)

        def wrong(X, y, order, bounds, Ws, *rest):
            W = Ws[0]
            before = W.copy()
            result = function(X, y, order, bounds, Ws, *rest)
            W += 0.01 * (W - before)
            return result
        return wrong
    steps.check_step("numba", *WORKLOADS["S"])  # a batch size's first step runs op by op
    steps.check_step("numba", *WORKLOADS["S"])
    monkeypatch.setattr(cpu_steps, "compiled", compiled)
    with pytest.raises(AssertionError, match="gradient of parameter 0"):
        steps.check_step("numba", *WORKLOADS["S"])


def test_row_figures_are_derived_per_sample():
    row = Row("train_step", "S", "numba", [1e-3, 2e-3, 4e-3], batch=64, flops=10**9, floor_ms=0.5,
              numpy_floor_ms=0.25)
    figures = row.metrics()
    np.testing.assert_allclose(figures["ms"], [1, 2, 4])
    np.testing.assert_allclose(figures["GFLOP/s"], [1000, 500, 250])
    np.testing.assert_allclose(figures["x GEMM floor"], [2, 4, 8])
    np.testing.assert_allclose(figures["x NumPy floor"], [4, 8, 16])
    fields = row.as_dict()
    assert (fields["median_ms"], fields["ratio"], fields["numpy_ratio"]) == (2.0, 4.0, 8.0)
    assert (fields["min_ms"], fields["max_ms"]) == (1.0, 4.0)


def test_kernel_rows_are_shares_of_the_roof():
    row = Row("adam", "AdamW 1M", "numba", [1e-3, 1e-3], bytes=28 * 10**6, roof_gbps=56.0)
    assert row.as_dict()["gbps"] == pytest.approx(28.0)
    assert row.as_dict()["ratio"] == pytest.approx(0.5)


def test_csv_has_a_line_per_row_and_figure_with_percentiles(tmp_path):
    rows = [Row("train_step", "S", "numba", [1e-3, 2e-3, 3e-3, 4e-3, 5e-3], batch=64, flops=10**6, floor_ms=1.0),
            Row("roof", "copy 256MB", "numba", [0.01] * 3, bytes=10**8, roof_gbps=10.0)]
    report.write_csv(report.lines(rows), tmp_path / "b.csv")
    with open(tmp_path / "b.csv", newline="") as stream:
        found = list(csv.DictReader(stream))
    assert tuple(found[0]) == report.CSV_FIELDS
    by_metric = {(line["op"], line["metric"]): line for line in found}
    assert set(by_metric) == {("train_step", "ms"), ("train_step", "GFLOP/s"), ("train_step", "x GEMM floor"),
                              ("roof", "ms"), ("roof", "GB/s"), ("roof", "share of roof")}
    ms = by_metric["train_step", "ms"]
    # numpy's linear percentiles of 1..5: p20 = 1.8, p50 = 3, p80 = 4.2
    assert [float(ms[p]) for p in ("p20", "p50", "p80")] == pytest.approx([1.8, 3.0, 4.2])
    assert float(by_metric["roof", "share of roof"]["p50"]) == pytest.approx(1.0)


def test_plot_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [Row(op, "S", provider, [t * b / 64 * 1e-3] * 3, batch=b, floor_ms=0.03 if op == "train_step" else None)
            for b in (32, 64) for op, provider, t in (("gemm_floor", "GEMM floor NumPy", 0.03),
                                                      ("train_step", "numba", 0.07))]
    rows.append(Row("adam", "AdamW 1M", "numba", [1e-3] * 3, bytes=28 * 10**6, roof_gbps=56.0))
    report.plot(report.lines(rows), tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_refuses_rows_with_nothing_to_draw(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="nothing to plot"):
        report.plot(report.lines([Row("epoch", "S", "numba", [1.0])]), tmp_path / "b.png")


def test_steps_are_held_against_the_floor_of_their_device():
    rows = [Row("gemm_floor", "S", "GEMM floor NumPy", [2e-3], batch=64),
            Row("gemm_floor", "S", "GEMM floor numba (MKL)", [1.5e-3], batch=64),
            Row("gemm_floor", "S", "GEMM floor cupy (cuBLAS)", [1e-3], batch=64, device="cuda"),
            Row("roof", "copy 256MB", "numba", [1.0], bytes=10**9, roof_gbps=50.0),
            Row("train_step", "S", "numba", [3e-3], batch=64, floor_ms=1.5),
            Row("train_step", "S", "torch eager", [4e-3], batch=64),
            Row("train_step", "S", "torch fused", [4e-3], batch=64, device="cuda"),
            Row("adam", "AdamW 1M", "torch", [1e-3], bytes=25 * 10**6)]
    numba, cpu, gpu, kernel = runner.hold_peers(rows)[-4:]
    assert (numba.median("x GEMM floor"), numba.median("x NumPy floor")) == (2.0, 1.5)  # its own, NumPy's
    assert (cpu.median("x GEMM floor"), cpu.median("x NumPy floor")) == (2.0, 2.0)
    assert (gpu.median("x GEMM floor"), gpu.numpy_floor_ms) == (4.0, None)
    assert kernel.median("share of roof") == pytest.approx(0.5)


def test_warnings_name_noisy_reps_and_ratios_below_the_floor():
    rows = [Row("train_step", "S", "numba", [1e-3], batch=64, floor_ms=2.0)]
    found = runner.warnings_for(rows, reps=1)
    assert len(found) == 2
    assert "--reps 1" in found[0] and "0.50x its GEMM floor" in found[1]
    assert runner.warnings_for([Row("train_step", "S", "numba", [3e-3], batch=64, floor_ms=2.0)], reps=5) == []


def test_each_provider_runs_in_a_job_of_its_own(monkeypatch):
    monkeypatch.setattr(runner, "_installed", lambda *modules: True)
    planned = runner.jobs(["S", "M"], ["numpy", "numba"], [32, 64], kernels=True, peers=True, reps=3)
    kinds = [job["kind"] for job in planned]
    assert kinds.count("fusedense") == 2 * 2 + 1  # per backend and workload, and numba's kernels
    assert [job["backend"] for job in planned if job.get("numpy_floor")] == ["numpy", "numpy"]
    assert all(len({job["kind"]}) == 1 for job in planned)
    assert {"torch", "jax", "sklearn"} <= set(kinds)
    assert planned[0]["workloads"] == [["S", 32], ["S", 64]]
    monkeypatch.setattr(runner, "_installed", lambda *modules: False)
    assert {job["kind"] for job in runner.jobs(["S"], ["numba"], None, True, True, 3)} == {"fusedense"}


def test_a_worker_refuses_an_unknown_job():
    done = subprocess.run([sys.executable, "-m", "engine.bench.worker"], input='{"kind": "tf"}', cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "job kind must be one of" in done.stderr


@pytest.mark.parametrize("argv, message", [(["--reps", "0"], "--reps: expected at least 1"),
                                           (["--reps", "x"], "--reps: expected a whole number"),
                                           (["--batch-sizes", "32,0"], "--batch-sizes: expected at least 1"),
                                           (["--workloads", "XL"], "--workloads: unknown XL")])
def test_cli_refuses_bad_options_in_one_line(argv, message):
    done = subprocess.run([sys.executable, "-m", "engine", "bench", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    csv_path = tmp_path_factory.mktemp("bench") / "b.csv"
    done = subprocess.run([sys.executable, "-m", "engine", "bench", "--workloads", "S", "--reps", "2", "--no-peers",
                           "--json", "--backends", "numpy,numba", "--csv", str(csv_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), csv_path, done.stderr


def test_a_run_reports_ratios_over_floors_of_the_same_run(bench_run):
    rows, _, stderr = bench_run
    assert "--reps 2: a median of fewer than 3 samples is noise" in stderr
    steps_ = {r["provider"]: r for r in rows if r["op"] == "train_step"}
    floors = {r["provider"]: r for r in rows if r["op"] == "gemm_floor"}
    assert len(floors) == 2  # NumPy's, timed once, and numba's own
    numpy_floor = floors["GEMM floor NumPy"]["median_ms"]
    own = floors[f"GEMM floor numba ({kernels.cpu.gemm_library})"]["median_ms"]
    # ratios are per sample: with 2 samples the median ratio is the mean of the two, as is
    # the median time, so median ratio = median time / floor exactly (the NumPy floor's);
    # the own floor's ratio is of each sample over the floor's sample taken beside it
    # (test_a_row_holds_each_sample_to_the_floor_sample_beside_it), near the median's
    assert steps_["numba"]["numpy_ratio"] == pytest.approx(steps_["numba"]["median_ms"] / numpy_floor)
    assert own > 0 and numpy_floor > 0
    for row in [*steps_.values(), *(r for r in rows if r["op"] == "fit_step")]:
        assert row["ratio"] > 0, row
    # GFLOP/s is per sample too: the median of two is the mean of flops / each time
    numba = steps_["numba"]
    rates = [step_flops(*WORKLOADS["S"]) / ms / 1e6 for ms in (numba["min_ms"], numba["max_ms"])]
    assert numba["gflops"] == pytest.approx(sum(rates) / 2)
    # numba's step and epoch also op by op, beside its compiled ones (engine.compiled_steps)
    assert {r["provider"] for r in rows if r["op"] == "epoch"} == {"numpy", "numba", "numba op by op"}
    # the step as fit runs it: an epoch's time over its batches, held to the same floors
    fit_steps = {r["provider"]: r for r in rows if r["op"] == "fit_step"}
    assert set(fit_steps) == {"numpy", "numba", "numba op by op"}


def test_a_row_holds_each_sample_to_the_floor_sample_beside_it():
    row = Row("train_step", "S", "numba", [2e-3, 6e-3, 3e-3], floor_ms=1.0, floor_samples=[1e-3, 2e-3, 3e-3])
    np.testing.assert_allclose(row.metrics()["x GEMM floor"], [2.0, 3.0, 1.0])
    assert row.as_dict()["ratio"] == pytest.approx(2.0)
    alone = Row("train_step", "S", "torch fused", [2e-3, 6e-3, 3e-3], floor_ms=1.5)  # a peer: the floor's median
    np.testing.assert_allclose(alone.metrics()["x GEMM floor"], [2e-3 / 1.5e-3, 4.0, 2.0])


def test_interleaved_samples_take_one_of_each_call_in_turn():
    calls = []

    def timed(fn, reps, inner, warm=True):
        assert (reps, warm) == (1, False)
        for _ in range(inner):
            fn()
        return [float(len(calls))]
    found = timing.interleaved([(timed, lambda: calls.append("step"), 2), (timed, lambda: calls.append("floor"), 1)],
                               reps=2)
    assert calls == ["step", "floor"] + ["step", "step", "floor"] * 2
    assert found == [[4.0, 7.0], [5.0, 8.0]]


def test_a_run_reports_every_kernel_row_as_a_share_of_the_better_roof(bench_run):
    rows, csv_path, _ = bench_run
    kernel_rows = {r["workload"]: r for r in rows if r["provider"] == "numba" and r["op"] not in runner.TRAINING
                   and r["op"] != "epoch"}
    roof = max(kernel_rows["copy 256MB"]["gbps"], kernel_rows["axpy 256MB in place"]["gbps"])
    assert set(kernel_rows) == {"copy 256MB", "axpy 256MB in place"} | {label for label, _, _ in worker.KERNEL_ROWS}
    for name, row in kernel_rows.items():
        assert row["ratio"] == pytest.approx(row["gbps"] / roof, rel=1e-6), name
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"], name
    with open(csv_path, newline="") as stream:
        metrics = {(line["op"], line["provider"], line["metric"]) for line in csv.DictReader(stream)}
    assert ("adam", "numba", "share of roof") in metrics and ("train_step", "numba", "x GEMM floor") in metrics
