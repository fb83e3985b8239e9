"""Training diagnostics: the update ratio tells a good learning rate from bad ones.

The same 64-128-64-10 ReLU MLP is trained three times on the standardized digits
(engine.demo.load_digits_splits), 8 epochs of AdamW (weight decay 1e-2, batch 32) with
fit(..., diagnostics=True), at lr 1e-3 (sensible), 1.0 (far too high) and 1e-6 (far too
low). Among what diagnostics logs per hidden layer and epoch is ``update_ratio/i`` =
||dW|| / ||W||, the size of an update relative to the weights (engine.diagnostics):
around 1e-3 is healthy.

Printed: update_ratio/1 (the first hidden layer) per epoch for the three runs, then each
run's final training loss and validation accuracy. At 1e-3 the ratio starts near 5e-3
and settles towards 1e-3 while the model learns; at 1e-6 it is ~5e-6, two hundred
times too small, and nothing is learnt; at 1.0 the first epoch's ratio is ~1e-1 and the
loss explodes (~500), after which the ratio sits at 1e-2 = lr * weight_decay: the updates
are the weight decay alone and the model stays at chance.

The figure (matplotlib, Agg backend) has three panels for the three runs: training loss,
validation accuracy and update_ratio/1 (log scales, with the 1e-3 rule of thumb dashed).
History.plot draws one history per figure, so the runs are drawn here with matplotlib.

Run: python examples/diagnostics.py [OUTPUT.png]   (default: diagnostics.png in the
current directory; about 4 s, about 25 s when the numba kernels compile first, on 2 cores)
"""
import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import engine
from engine.demo import load_digits_splits

RATES = {"lr 1e-3 (sensible)": 1e-3, "lr 1.0 (too high)": 1.0, "lr 1e-6 (too low)": 1e-6}
EPOCHS = 8


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default="diagnostics.png",
                        help="where to save the figure (default: diagnostics.png in the current directory)")
    output = parser.parse_args().output
    started = time.perf_counter()
    (X_train, y_train), (X_val, y_val), _ = load_digits_splits(0)
    histories = {}
    for label, lr in RATES.items():
        model = engine.MLP([64, 128, 64, 10], seed=0)
        trainer = engine.Trainer(model, optimizer=engine.AdamW(lr=lr, weight_decay=1e-2))
        histories[label] = trainer.fit(X_train, y_train, epochs=EPOCHS, batch_size=32,
                                       validation_data=(X_val, y_val), verbose=0, diagnostics=True).history

    print(f"digits, 64-128-64-10 ReLU, AdamW, {EPOCHS} epochs, fit(..., diagnostics=True)")
    print("update_ratio/1 = ||dW1|| / ||W1|| per epoch (healthy: around 1e-3)")
    print("epoch  " + "  ".join(f"{label:>20}" for label in RATES))
    for epoch in range(EPOCHS):
        print(f"{epoch + 1:>5}  " + "  ".join(f"{histories[label]['update_ratio/1'][epoch]:>20.2e}"
                                           for label in RATES))
    for label, h in histories.items():
        print(f"{label:<20} final loss {h['loss'][-1]:.4f}, val accuracy {h['val_accuracy'][-1]:.4f}, "
              f"update_ratio/1 {h['update_ratio/1'][-1]:.2e}, dead/1 {h['dead/1'][-1]:.2f}")

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    epochs = range(1, EPOCHS + 1)
    for label, h in histories.items():
        for ax, key in zip(axes, ("loss", "val_accuracy", "update_ratio/1")):
            ax.plot(epochs, h[key], marker=".", label=label)
    for ax, key in zip(axes, ("loss", "val_accuracy", "update_ratio/1")):
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")
    axes[2].axhline(1e-3, color="grey", linestyle="--", linewidth=1, label="1e-3 (rule of thumb)")
    axes[2].legend()
    fig.suptitle("digits MLP: update ratio of hidden layer 1 at three learning rates")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    print(f"figure saved to {output}")
    print(f"wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
