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
    bench.add_argument("--reps", type=int, default=5, help="timed repetitions per figure (median reported)")
    bench.add_argument("--no-kernels", action="store_true", help="skip the kernel workloads")
    bench.add_argument("--no-peers", action="store_true", help="skip PyTorch and JAX even when installed")
    bench.add_argument("--json", action="store_true", help="print the rows as JSON")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run
        backend = None if args.backend is None else _backend_or_exit(parser, "--backend", args.backend).name
        run(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, backend=backend,
            verbose=0 if args.quiet else 1)
    elif args.command == "bench":
        from .bench import WORKLOADS, run
        workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
        unknown = [w for w in workloads if w not in WORKLOADS]
        if unknown:
            parser.error(f"--workloads: unknown {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
        backends = None if args.backends is None else [b.strip() for b in args.backends.split(",")]
        for b in backends or ():
            _backend_or_exit(parser, "--backends", b)
        run(workloads, backends, kernels=not args.no_kernels, peers=not args.no_peers, reps=args.reps,
            as_json=args.json)
    return 0
