"""Command line: ``python -m engine demo`` and ``python -m engine bench``."""
from __future__ import annotations

import argparse

from . import backend as backend_module


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m engine", description="fusedense: fused-kernel MLP training")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train an MLP on scikit-learn's handwritten digits")
    demo.add_argument("--epochs", type=int, default=40)
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--backend", choices=["auto", "numpy", "numba", "cupy"], default=None)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run
        backend = None if args.backend is None else backend_module.module(args.backend).name
        run(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, backend=backend,
            verbose=0 if args.quiet else 1)
    return 0
