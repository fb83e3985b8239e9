"""The child-process side of tests/test_robustness_properties.py: runs one case of the
public API on fresh objects and reports what happened, so that a crash or hang in a
kernel is the parent's finding, not the end of the test run.

A case is a dict: ``op`` (a name in OPS), ``backend``, ``dtype``, ``loss`` and the op's
arguments. The report is a dict: ``outcome`` ("ok" or "error"), the exception's ``type``
and ``message``, ``changed`` (whether weights, optimizer state or the step count moved),
and what the op returned, summarised (``finite``, ``shape``, ``steps``).
"""
from __future__ import annotations

import os
import signal
import tempfile

import numpy as np

import engine

N_IN, HIDDEN = 3, 5
OUT = {"cross_entropy": 3, "binary_cross_entropy": 1, "mse": 2, "huber": 2}


def good_targets(loss, n, seed=0):
    g = np.random.default_rng(seed)
    if loss == "cross_entropy":
        return g.integers(0, OUT[loss], n)
    if loss == "binary_cross_entropy":
        return g.integers(0, 2, n).astype(np.float64)
    return g.normal(size=(n, OUT[loss]))


def make_trainer(case):
    model = engine.MLP([N_IN, HIDDEN, OUT[case["loss"]]], dropout=0.1, seed=0, backend=case["backend"],
                       dtype=case["dtype"])
    trainer = engine.Trainer(model, loss=case["loss"], optimizer=engine.AdamW(lr=1e-2))
    X = np.random.default_rng(1).normal(size=(6, N_IN))
    trainer.train_step(X, good_targets(case["loss"], 6))  # optimizer state that a bad call must keep
    return trainer


def snapshot(trainer):
    state = trainer.optimizer.state_dict()
    return [*trainer.model.get_weights(), *state["arrays"].values()], trainer.optimizer.iterations


def _changed(before, after):
    arrays_before, steps_before = before
    arrays_after, steps_after = after
    return steps_before != steps_after or any(not np.array_equal(a, b, equal_nan=True)
                                              for a, b in zip(arrays_before, arrays_after))


def _summary(value):
    if isinstance(value, dict):
        return {"finite": all(np.isfinite(v) for v in value.values()), "keys": sorted(value)}
    if isinstance(value, float):
        return {"finite": bool(np.isfinite(value))}
    if isinstance(value, np.ndarray):
        return {"finite": bool(np.isfinite(value).all()), "shape": value.shape}
    return {}


def _train_step(trainer, case):
    return trainer.train_step(case["X"], case["y"])


def _fit(trainer, case):
    history = trainer.fit(case["X"], case["y"], **{"verbose": 0, **case["kwargs"]})
    return {name: values[-1] for name, values in history.history.items()}


def _evaluate(trainer, case):
    return trainer.evaluate(case["X"], case["y"], **case["kwargs"])


def _predict(trainer, case):
    return trainer.model.predict(case["X"], **case["kwargs"])


def _set_weights(trainer, case):
    trainer.model.set_weights(case["weights"])
    return np.concatenate([w.ravel() for w in trainer.model.get_weights()])


def _save_load(trainer, case):
    """Save the model and a checkpoint, corrupt the bytes as the case says, load both."""
    with tempfile.TemporaryDirectory() as folder:
        results = []
        for kind in ("model", "checkpoint"):
            path = os.path.join(folder, f"{kind}.npz")
            trainer.model.save(path) if kind == "model" else trainer.save_checkpoint(path)
            with open(path, "rb") as f:
                blob = bytearray(f.read())
            for position, value in case["edits"]:
                blob[position % len(blob)] = value
            blob = blob[:case["cut"]] if case["cut"] is not None else blob
            with open(path, "wb") as f:
                f.write(blob)
            if kind == "model":
                results.append(engine.load_model(path, backend=case["backend"]).get_weights())
            else:
                trainer.load_checkpoint(path)
                results.append(trainer.model.get_weights())
        return np.concatenate([w.ravel() for w in results[0] + results[1]])


def _mlp(trainer, case):
    model = engine.MLP(backend=case["backend"], **case["kwargs"])
    return model.predict(np.ones((2, model.sizes[0])))


def _sklearn(trainer, case):
    from engine.sklearn import MLPClassifier, MLPRegressor
    kind = MLPClassifier if case["estimator"] == "classifier" else MLPRegressor
    estimator = kind(hidden_layer_sizes=(4,), epochs=2, batch_size=4, backend=case["backend"], random_state=0)
    estimator.fit(case["X"], case["y"])
    predicted = estimator.predict(case["X"])
    if kind is MLPClassifier:  # labels of the training set (strings too), else NaN: "not finite"
        return np.where(np.isin(predicted, case["y"]), 0.0, np.nan)
    return np.asarray(predicted, dtype=np.float64)


def _crash(trainer, case):
    """What a segfaulting kernel does to its process (the harness's own test)."""
    os.kill(os.getpid(), signal.SIGSEGV)


OPS = {"train_step": _train_step, "fit": _fit, "evaluate": _evaluate, "predict": _predict,
       "set_weights": _set_weights, "save_load": _save_load, "mlp": _mlp, "sklearn": _sklearn, "crash": _crash}


def run_case(case):
    trainer = make_trainer(case)
    before = snapshot(trainer)
    try:
        value = OPS[case["op"]](trainer, case)
    except Exception as error:  # the parent judges which exceptions are allowed
        return {"outcome": "error", "type": type(error).__name__, "message": str(error),
                "changed": _changed(before, snapshot(trainer))}
    after = snapshot(trainer)
    return {"outcome": "ok", "changed": _changed(before, after), "steps": after[1] - before[1], **_summary(value)}
