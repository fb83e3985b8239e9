"""Soak: many training steps in one process, checking that memory stays flat and steps do
not slow down. Not part of the test run (it takes minutes); run it as

    python tests/soak.py [--steps 10000] [--backend numba] [--warmup 1000]

It trains an MLP on fixed data with fit (one step per batch, epochs until ``--steps``
steps), with a checkpoint save and a validation evaluate every epoch, then reports the
resident memory (RSS) after warm-up and at the end, and the median step time of the
first and last 1,000 steps. It exits 1 when RSS grew by 1% or more after warm-up, or the
last 1,000 steps' median is more than 5% above the first's; on a noisy shared machine a
timing failure should be re-run before it is believed.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine  # noqa: E402


def rss_bytes():
    """This process's resident set size, from /proc (Linux) or psutil where installed."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil
        return psutil.Process().memory_info().rss


class StepClock(engine.callbacks.Callback):
    """Wall time of every batch (from one on_batch_end to the next: the whole step as the
    user sees it, loss read included), and the RSS after each epoch."""

    def __init__(self):
        self.times, self.rss, self.last = [], [], None

    def on_epoch_begin(self, epoch, logs=None):
        self.last = time.perf_counter()

    def on_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now

    def on_epoch_end(self, epoch, logs=None):
        self.rss.append((len(self.times), rss_bytes()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000, help="steps before the RSS baseline")
    parser.add_argument("--window", type=int, default=1_000, help="steps in each timed window")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    g = np.random.default_rng(0)
    X, y = g.normal(size=(50 * args.batch_size, 64)).astype(np.float32), g.integers(0, 10, 50 * args.batch_size)
    X_val, y_val = X[:512], y[:512]
    model = engine.MLP([64, 256, 256, 10], dropout=0.1, seed=0, backend=args.backend)
    clock = StepClock()
    trainer = engine.Trainer(model, optimizer=engine.AdamW(lr=1e-3), callbacks=[clock])
    steps_per_epoch = len(X) // args.batch_size
    epochs = -(-args.steps // steps_per_epoch)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = engine.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: trainer.save_checkpoint(os.path.join(folder, "soak.npz")))
        gc.collect()
        trainer.fit(X, y, epochs=epochs, batch_size=args.batch_size, validation_data=(X_val, y_val), verbose=0,
                    callbacks=[checkpoint])
    gc.collect()
    times = np.array(clock.times[:args.steps])
    baseline = next(rss for steps, rss in clock.rss if steps >= args.warmup)
    final = rss_bytes()
    growth = (final - baseline) / baseline
    first, last = np.median(times[:args.window]), np.median(times[-args.window:])
    slowdown = last / first - 1
    print(f"soak: {len(times)} steps of {model!r} on {model.backend}, batch {args.batch_size}")
    print(f"RSS after {args.warmup} warm-up steps: {baseline / 2**20:.1f} MiB; at the end: {final / 2**20:.1f} MiB "
          f"(growth {100 * growth:+.2f}%, limit +1%)")
    print(f"median step time, first {args.window} steps: {first * 1e6:.1f} us; last {args.window}: "
          f"{last * 1e6:.1f} us ({100 * slowdown:+.1f}%, limit +5%)")
    print(f"  means: {np.mean(times[:args.window]) * 1e6:.1f} us and {np.mean(times[-args.window:]) * 1e6:.1f} us")
    windows = [np.median(times[i:i + args.window]) * 1e6 for i in range(0, len(times), args.window)]
    print("  median per window (us): " + " ".join(f"{w:.0f}" for w in windows))
    print("  RSS per epoch (MiB, steps): " + " ".join(f"{rss / 2**20:.1f}@{steps}" for steps, rss in clock.rss[::4]))
    ok = growth < 0.01 and slowdown <= 0.05
    print("soak: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
