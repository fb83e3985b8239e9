"""Random search with coarse-to-fine refinement over the learning rate and hidden width.

engine.tuning.random_search draws 8 configurations of {lr: loguniform(1e-4, 1e-1),
hidden: choice([16, 32, 64, 128, 256])}, trains a 64-hidden-10 ReLU MLP with AdamW on
each for 5 epochs (batch 32) on the standardized digits training split
(engine.demo.load_digits_splits) and scores it by its validation loss; refine=2 then runs
two more rounds of 8, drawn around the best trials so far in ranges half and a quarter as
wide (24 trials in all). Lower is better.

Printed: engine.tuning.table of the 5 best trials (rank, validation loss, seconds, lr,
hidden), the best trial of each round (refinement should find better ones), and the
best configuration retrained the same way and scored once on the test split.

Run: python examples/tuning.py   (about 6 s; about 25 s when the numba kernels compile first, on 2 cores)
"""
import time

import engine
from engine.demo import load_digits_splits
from engine.tuning import choice, loguniform, random_search, table

N_TRIALS, REFINE, EPOCHS = 8, 2, 5


def main():
    started = time.perf_counter()
    (X_train, y_train), (X_val, y_val), (X_test, y_test) = load_digits_splits(0)

    def train(config):
        model = engine.MLP([64, config["hidden"], 10], seed=0)
        trainer = engine.Trainer(model, optimizer=engine.AdamW(lr=config["lr"]))
        history = trainer.fit(X_train, y_train, epochs=EPOCHS, batch_size=32, validation_data=(X_val, y_val),
                              verbose=0)
        return trainer, history

    run = []   # every config in the order the search ran it: rounds of N_TRIALS

    def objective(config):   # lower is better: the last epoch's validation loss
        run.append(config)
        return train(config)[1].history["val_loss"][-1]

    space = {"lr": loguniform(1e-4, 1e-1), "hidden": choice([16, 32, 64, 128, 256])}
    print(f"random search on digits: {N_TRIALS} trials x (1 + refine={REFINE}) rounds, {EPOCHS} epochs each, "
          f"space {space}")
    trials = random_search(objective, space, n_trials=N_TRIALS, refine=REFINE, seed=0)
    print(table(trials[:5]))
    scores = {id(t.config): t.score for t in trials}
    for r in range(REFINE + 1):
        round_scores = [scores[id(c)] for c in run[r * N_TRIALS:(r + 1) * N_TRIALS]]
        print(f"round {r} ({'random' if r == 0 else f'refine {r}'}): best validation loss {min(round_scores):.4f}")
    best = trials[0].config
    trainer, _ = train(best)
    test = trainer.evaluate(X_test, y_test)
    print(f"best config lr={best['lr']:.3g}, hidden={best['hidden']}: validation loss {trials[0].score:.4f}, "
          f"test loss {test['loss']:.4f}, test accuracy {test['accuracy']:.4f}")
    print(f"wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
