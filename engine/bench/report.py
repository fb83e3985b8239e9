"""Rows of measurements, the figures derived from them, and their outputs: the table,
JSON, CSV and the plot.

A row keeps its raw samples (seconds per call) and what it is held against (the GEMM
floor of the same run, the memory roof); every figure is derived here, per sample, so
the CSV's p20/p50/p80 of a ratio are percentiles of the ratio itself.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np

from .timing import percentiles


@dataclass
class Row:
    op: str  # "train_step", "fit_step", "epoch", "gemm_floor", "roof", or an op of kernels.spec
    workload: str  # "S", "M", "L", or a kernel row's label ("AdamW 16M")
    provider: str  # a backend, a peer ("torch fused"), or a floor ("GEMM floor MKL")
    samples: list  # seconds per call, one per rep
    batch: int | None = None
    flops: int = 0  # per call, for GFLOP/s
    bytes: int = 0  # read and written per call, for GB/s
    floor_ms: float | None = None  # the GEMM floor (median) this row's time is over
    floor_samples: list | None = None  # or the floor's samples taken beside this row's, one each
    numpy_floor_ms: float | None = None  # the floor through NumPy's BLAS
    roof_gbps: float | None = None  # the memory roof its GB/s is a share of
    device: str = "cpu"  # or "cuda"

    @property
    def label(self):
        """The row's name in the table (the workload, "S in fit" for a step as fit runs it,
        "S epoch", "M batch norm" for a step with normalized layers, or the kernel row's label)."""
        if self.op == "epoch":
            return f"{self.workload} epoch"
        if self.op == "fit_step":
            return f"{self.workload} in fit"
        if self.op.startswith("train_step "):
            return f"{self.workload} {self.op.removeprefix('train_step ')}"
        return self.workload

    def metrics(self):
        """Each figure of this row, one value per sample."""
        seconds = np.asarray(self.samples, np.float64)
        ms = seconds * 1e3
        found = {"ms": ms}
        if self.flops:
            found["GFLOP/s"] = self.flops / seconds / 1e9
        if self.bytes:
            found["GB/s"] = self.bytes / seconds / 1e9
        if self.floor_samples:  # each sample over the floor's taken beside it (timing.interleaved)
            found["x GEMM floor"] = seconds / np.asarray(self.floor_samples, np.float64)
        elif self.floor_ms:
            found["x GEMM floor"] = ms / self.floor_ms
        if self.numpy_floor_ms:
            found["x NumPy floor"] = ms / self.numpy_floor_ms
        if self.roof_gbps and self.bytes:
            found["share of roof"] = found["GB/s"] / self.roof_gbps
        return found

    def median(self, metric):
        values = self.metrics().get(metric)
        return None if values is None else percentiles(values)[1]

    def as_dict(self):
        """The row's medians and spread (what ``--json`` prints)."""
        p20, p50, p80 = percentiles(self.metrics()["ms"])
        ratio = self.median("x GEMM floor") if self.floor_ms else self.median("share of roof")
        return {"op": self.op, "workload": self.workload, "provider": self.provider, "batch": self.batch,
                "median_ms": p50, "p20_ms": p20, "p80_ms": p80,
                "min_ms": float(np.min(self.samples)) * 1e3, "max_ms": float(np.max(self.samples)) * 1e3,
                "gflops": self.median("GFLOP/s"), "gbps": self.median("GB/s"), "ratio": ratio,
                "numpy_ratio": self.median("x NumPy floor")}


def _fmt(value, pattern):
    return "" if value is None else format(value, pattern)


def print_table(rows, file=None):
    header = (f"{'workload':<24} {'provider':<21} {'batch':>5} {'median ms':>10} {'p20 ms':>9} {'p80 ms':>9} "
              f"{'GFLOP/s':>8} {'GB/s':>7} {'ratio':>7} {'/NumPy':>7}")
    print(header, file=file)
    print("-" * len(header), file=file)
    for row in rows:
        r = row.as_dict()
        print(f"{row.label:<24} {r['provider']:<21} {_fmt(r['batch'], 'd'):>5} {r['median_ms']:>10.4f} "
              f"{r['p20_ms']:>9.4f} {r['p80_ms']:>9.4f} {_fmt(r['gflops'], '.1f'):>8} {_fmt(r['gbps'], '.1f'):>7} "
              f"{_fmt(r['ratio'], '.3f'):>7} {_fmt(r['numpy_ratio'], '.3f'):>7}", file=file)


CSV_FIELDS = ("op", "provider", "workload", "batch", "metric", "p20", "p50", "p80")


def lines(rows):
    """One dict per row and figure: op, provider (backend or peer), workload, batch,
    metric, and the figure's p20, p50 and p80 over the row's samples."""
    found = []
    for row in rows:
        for metric, values in row.metrics().items():
            p20, p50, p80 = percentiles(values)
            found.append({"op": row.op, "provider": row.provider, "workload": row.workload, "batch": row.batch,
                          "metric": metric, "p20": p20, "p50": p50, "p80": p80})
    return found


def write_csv(found, path):
    """The :func:`lines` as CSV, a header first."""
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, CSV_FIELDS)
        writer.writeheader()
        for line in found:
            writer.writerow({**line, **{p: f"{line[p]:.6g}" for p in ("p20", "p50", "p80")},
                             "batch": "" if line["batch"] is None else line["batch"]})


def plot(lines, path):
    """Draw, from :func:`lines`, time per training step against batch size for each
    provider (one panel per workload, the GEMM floors as dashed lines, the p20-p80 band
    shaded), and each memory-bound kernel's GB/s as a share of the roof (the ``plot``
    extra: matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'fusedense[plot]'") from None
    steps = [line for line in lines if line["metric"] == "ms" and line["op"] in ("train_step", "gemm_floor")]
    shares = [line for line in lines if line["metric"] == "share of roof" and line["op"] != "roof"]
    workloads = list(dict.fromkeys(line["workload"] for line in steps))
    panels = len(workloads) + bool(shares)
    if not panels:
        raise ValueError("nothing to plot: the rows have neither training steps nor kernel shares of the roof")
    figure, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.2), squeeze=False)
    for ax, workload in zip(axes[0], workloads):
        _plot_steps(ax, [line for line in steps if line["workload"] == workload], workload)
    if shares:
        _plot_shares(axes[0][-1], shares)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_steps(ax, lines, workload):
    for provider in dict.fromkeys(line["provider"] for line in lines):
        mine = sorted((line for line in lines if line["provider"] == provider), key=lambda line: line["batch"])
        batch = [line["batch"] for line in mine]
        median = [line["p50"] for line in mine]
        floor = provider.startswith("GEMM floor")
        ax.plot(batch, median, "--" if floor else "-o", label=provider, linewidth=1.2 if floor else 1.8,
                markersize=4)
        ax.fill_between(batch, [line["p20"] for line in mine], [line["p80"] for line in mine], alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("ms per training step")
    ax.set_title(f"workload {workload}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _plot_shares(ax, lines):
    labels = [f"{line['workload']}\n{line['provider']}" for line in lines]
    positions = np.arange(len(lines))
    providers = list(dict.fromkeys(line["provider"] for line in lines))
    colors = [f"C{providers.index(line['provider'])}" for line in lines]
    ax.barh(positions, [line["p50"] for line in lines],
            xerr=[[line["p50"] - line["p20"] for line in lines], [line["p80"] - line["p50"] for line in lines]],
            color=colors, alpha=0.85)
    ax.set_yticks(positions, labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("GB/s as a share of the measured memory roof")
    ax.set_title("memory-bound kernels")
