"""Command line: ``python -m engine demo`` and ``python -m engine bench``."""
from __future__ import annotations

import argparse

from . import backend as backend_module


def _backend_or_exit(parser, option, name):
    """The backend module, or exit with one line saying why it cannot run (no traceback:
    a missing GPU or library is the user's situation, not a bug)."""
    from .errors import BackendUnavailable
    try:
        return backend_module.module(name)
    except (BackendUnavailable, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {option} {name}: {error}\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1; got {value}")
    return value


def _int_list(parser, option, text):
    try:
        return [_positive_int(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError as error:
        parser.error(f"{option}: {error}")


def _needs_matplotlib(parser):
    """Fail before measuring for minutes, not after."""
    import importlib.util
    if importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install 'fusedense[plot]'")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m engine", description="fusedense: fused-kernel MLP training")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train an MLP on scikit-learn's handwritten digits")
    demo.add_argument("--epochs", type=int, default=40)
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--backend", choices=["auto", "numpy", "numba", "cupy"], default=None)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")

    bench = commands.add_parser("bench", help="time the standard workloads on the available backends")
    bench.add_argument("--workloads", default="S,M,L", help="comma-separated subset of S,M,L (default all)")
    bench.add_argument("--backends", "--backend", default=None, help="comma-separated backends (default: all available)")
    bench.add_argument("--reps", type=_positive_int, default=5,
                       help="timed samples per figure (median and p20-p80 reported; default 5)")
    bench.add_argument("--batch-sizes", default=None,
                       help="comma-separated batch sizes for the training workloads (default: each one's own)")
    bench.add_argument("--no-kernels", action="store_true", help="skip the kernel workloads")
    bench.add_argument("--no-peers", action="store_true", help="skip PyTorch and JAX even when installed")
    bench.add_argument("--json", action="store_true", help="print the rows as JSON")
    bench.add_argument("--csv", metavar="FILE", help="write one line per figure: op, provider, workload, batch, "
                                                     "metric, p20, p50, p80")
    bench.add_argument("--plot", metavar="FILE.png", help="draw time per step against batch size and the kernels' "
                                                         "share of the roof (needs the plot extra: matplotlib)")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run
        backend = None if args.backend is None else _backend_or_exit(parser, "--backend", args.backend).name
        run(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, backend=backend,
            verbose=0 if args.quiet else 1)
    elif args.command == "bench":
        from .bench import WORKLOADS, run
        if args.plot:
            _needs_matplotlib(parser)
        workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
        unknown = [w for w in workloads if w not in WORKLOADS]
        if unknown:
            parser.error(f"--workloads: unknown {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
        backends = None if args.backends is None else [b.strip() for b in args.backends.split(",")]
        for b in backends or ():
            _backend_or_exit(parser, "--backends", b)
        batch_sizes = None if args.batch_sizes is None else _int_list(parser, "--batch-sizes", args.batch_sizes)
        _, failures = run(workloads, backends, kernels=not args.no_kernels, peers=not args.no_peers,
                          reps=args.reps, batch_sizes=batch_sizes, as_json=args.json, csv_path=args.csv,
                          plot_path=args.plot)
        if any(failure.ours for failure in failures):
            return 1
    return 0
