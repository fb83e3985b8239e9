"""Command line: ``python -m engine demo``, ``python -m engine bench`` and
``python -m engine compile``."""
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


def _int_at_least(low):
    """An argparse type: a whole number of at least ``low``, else a message saying so."""
    def convert(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {low}; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected at least {low}; got {value}")
        return value
    return convert


_positive_int = _int_at_least(1)


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


def _names(parser, option, text, allowed):
    """The comma-separated names of ``option`` (None: all), each one of ``allowed``."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        parser.error(f"{option}: expected names among {', '.join(allowed)}; got {text!r}")
    return names


def _compile(parser, args):
    from . import activations, losses, optim, precompile
    backend = None if args.backend is None else _backend_or_exit(parser, "--backend", args.backend).name
    runs = precompile.run(backend, _names(parser, "--dtypes", args.dtypes, precompile.DTYPES),
                          _names(parser, "--activations", args.activations, activations.NAMES),
                          _names(parser, "--losses", args.losses, losses.NAMES),
                          _names(parser, "--optimizers", args.optimizers, optim.NAMES),
                          verbose=0 if args.quiet else 1)
    print(f"compiled the kernels of {runs} training runs on {backend or backend_module.get_backend()}")


def main(argv=None, prog=None):
    """Run the command line ``argv`` (default sys.argv[1:]); ``prog`` is how the usage lines
    name the program: ``python -m engine`` passes its own, the ``fusedense`` console script
    leaves argparse's default (the script's name)."""
    parser = argparse.ArgumentParser(prog=prog, description="fusedense: fused-kernel MLP training")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train an MLP on scikit-learn's handwritten digits")
    demo.add_argument("--epochs", type=_positive_int, default=40, metavar="N",
                      help="most epochs to train; early stopping on the validation loss may end sooner "
                           "(default: %(default)s)")
    demo.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                      help="rows per training step (default: %(default)s)")
    demo.add_argument("--seed", type=_int_at_least(0), default=0, metavar="N",
                      help="seeds the data split, the initial weights, dropout and shuffling "
                           "(default: %(default)s)")
    demo.add_argument("--backend", choices=["auto", "numpy", "numba", "cupy"], default=None, metavar="NAME",
                      help="auto, numpy, numba or cupy (default: ENGINE_BACKEND, else auto)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--distributed", action="store_true",
                      help="data-parallel over the processes of an MPI job (mpirun -n 2 python -m engine demo "
                           "--distributed; needs the mpi extra); --batch-size is then per process")

    bench = commands.add_parser("bench", help="time the standard workloads on the available backends")
    bench.add_argument("--workloads", default="S,M,L", help="comma-separated subset of S,M,L (default all)")
    bench.add_argument("--backends", "--backend", default=None, help="comma-separated backends (default: all available)")
    bench.add_argument("--reps", type=_positive_int, default=5,
                       help="timed samples per figure (median and p20-p80 reported; default 5)")
    bench.add_argument("--batch-sizes", default=None,
                       help="comma-separated batch sizes for the training workloads (default: each one's own)")
    bench.add_argument("--no-kernels", action="store_true", help="skip the kernel workloads")
    bench.add_argument("--normalization", choices=["batch", "layer"], default=None,
                       help="also time each fusedense step with its hidden layers normalized (MLP normalization=)")
    bench.add_argument("--no-peers", action="store_true", help="skip PyTorch and JAX even when installed")
    bench.add_argument("--json", action="store_true", help="print the rows as JSON")
    bench.add_argument("--csv", metavar="FILE", help="write one line per figure: op, provider, workload, batch, "
                                                     "metric, p20, p50, p80")
    bench.add_argument("--plot", metavar="FILE.png", help="draw time per step against batch size and the kernels' "
                                                         "share of the roof (needs the plot extra: matplotlib)")

    compile_ = commands.add_parser(
        "compile", help="compile the kernels into their disk cache ahead of time (for images and clusters)")
    compile_.add_argument("--backend", choices=["auto", "numpy", "numba", "cupy"], default=None, metavar="NAME",
                          help="auto, numba or cupy (default: ENGINE_BACKEND, else auto)")
    compile_.add_argument("--dtypes", default="float32,float64", help="comma-separated (default: %(default)s)")
    compile_.add_argument("--activations", default=None, help="comma-separated names (default: all)")
    compile_.add_argument("--losses", default=None, help="comma-separated names (default: all)")
    compile_.add_argument("--optimizers", default=None, help="comma-separated names (default: all)")
    compile_.add_argument("--quiet", action="store_true", help="no progress bar")

    args = parser.parse_args(argv)
    if args.command == "compile":
        _compile(parser, args)
    elif args.command == "demo":
        from .demo import run
        backend = None if args.backend is None else _backend_or_exit(parser, "--backend", args.backend).name
        run(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, backend=backend,
            verbose=0 if args.quiet else 1, data_parallel=args.distributed)
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
                          plot_path=args.plot, normalization=args.normalization)
        if any(failure.ours for failure in failures):
            return 1
    return 0
