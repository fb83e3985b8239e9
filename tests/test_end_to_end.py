"""End to end on real data that ships with scikit-learn (no downloads): digits, breast cancer,
diabetes; determinism given a seed; the demo command line."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import engine
import engine.demo

sklearn_datasets = pytest.importorskip("sklearn.datasets")
from sklearn.model_selection import train_test_split  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def standardized_split(X, y, seed, stratify=True):
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=seed,
                                                        stratify=y if stratify else None)
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    std[std == 0] = 1.0
    return (X_train - mean) / std, (X_test - mean) / std, y_train, y_test


@pytest.fixture
def on_backend(backend_name, monkeypatch):
    """Make backend_name the default (the demo builds its model on the default backend)."""
    from engine import backend as backend_module
    monkeypatch.setattr(backend_module, "_selected", backend_module._selected)
    engine.set_backend(backend_name)
    return backend_name


def test_digits_demo_accuracy(on_backend, capsys):
    result = engine.demo.run(epochs=10, verbose=0)
    assert set(result) >= {"loss", "accuracy"}
    assert result["accuracy"] >= 0.95, result
    assert np.isfinite(result["loss"]) and result["loss"] < 0.5
    out = capsys.readouterr().out
    assert re.search(r"^test accuracy: ", out, re.MULTILINE)


def test_digits_own_setup(backend_name):
    X, y = sklearn_datasets.load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = standardized_split(X, y, seed=0)
    model = engine.MLP([64, 64, 10], activation="gelu", output="softmax", seed=1, backend=backend_name)
    trainer = engine.Trainer(model, loss=engine.SoftmaxCrossEntropy(label_smoothing=0.05),
                             optimizer=engine.NAdam(lr=3e-3), clip_global_norm=5.0)
    trainer.fit(X_train, y_train, epochs=8, batch_size=64, verbose=0)
    predicted = model.predict(X_test).argmax(axis=1)
    accuracy = np.mean(predicted == y_test)
    assert accuracy >= 0.95
    assert trainer.evaluate(X_test, y_test)["accuracy"] == pytest.approx(accuracy)


def _breast_cancer(backend_name, dtype="float32", seed=0, dropout=0.0, epochs=30):
    X, y = sklearn_datasets.load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = standardized_split(X, y, seed=0)
    model = engine.MLP([30, 32, 1], output="sigmoid", dropout=dropout, seed=seed, backend=backend_name, dtype=dtype)
    trainer = engine.Trainer(model, loss="binary_cross_entropy", optimizer=engine.AdamW(lr=1e-3))
    history = trainer.fit(X_train, y_train.astype(np.float64), epochs=epochs, batch_size=32, shuffle=True,
                          validation_split=0.1, verbose=0)
    return model, trainer, history, X_test, y_test


def test_breast_cancer_binary(backend_name, dtype):
    model, trainer, history, X_test, y_test = _breast_cancer(backend_name, dtype)
    p = model.predict(X_test)
    assert p.shape == (len(X_test), 1) and ((p > 0) & (p < 1)).all()
    accuracy = np.mean((p[:, 0] > 0.5) == (y_test == 1))
    assert accuracy >= 0.93
    assert trainer.evaluate(X_test, y_test)["accuracy"] == pytest.approx(accuracy)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_diabetes_regression_beats_the_mean(backend_name, dtype):
    X, y = sklearn_datasets.load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = standardized_split(X, y, seed=1, stratify=False)
    mu, sd = y_train.mean(), y_train.std()
    model = engine.MLP([10, 8, 1], activation="tanh", seed=0, backend=backend_name, dtype=dtype)
    trainer = engine.Trainer(model, loss="mse", metrics=("mse",),
                             optimizer=engine.AdamW(lr=1e-2, weight_decay=0.1))
    trainer.fit(X_train, (y_train - mu) / sd, epochs=30, batch_size=32, verbose=0)
    predicted = model.predict(X_test)[:, 0] * sd + mu
    r2 = 1.0 - np.sum((predicted - y_test) ** 2) / np.sum((y_test - y_test.mean()) ** 2)
    assert r2 > 0.3, r2
    standardized_mse = np.mean(((y_test - mu) / sd - model.predict(X_test)[:, 0]) ** 2)
    assert trainer.evaluate(X_test, (y_test - mu) / sd)["mse"] == pytest.approx(standardized_mse, rel=1e-6)
    # (rel 1e-6: the trainer rounds the targets to the model's float32 before its metric sees them)


def test_deterministic_given_seed(backend_name):
    runs = [_breast_cancer(backend_name, seed=3, dropout=0.3, epochs=5) for _ in range(2)]
    (m1, _, h1, X_test, _), (m2, _, h2, _, _) = runs
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(m1.predict(X_test), m2.predict(X_test))
    assert h1.history == h2.history
    m3 = _breast_cancer(backend_name, seed=4, dropout=0.3, epochs=5)[0]
    assert not np.array_equal(m3.predict(X_test), m1.predict(X_test))


def test_demo_command_line(backend_name):
    env = dict(os.environ, ENGINE_BACKEND=backend_name)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-m", "engine", "demo", "--quiet", "--epochs", "3"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    accuracy_lines = [line for line in lines if line.startswith("test accuracy:")]
    assert len(accuracy_lines) == 1, result.stdout
    accuracy = float(accuracy_lines[0].split(":", 1)[1])
    assert 0.5 < accuracy <= 1.0  # 3 epochs on digits is far above chance (0.1)
    assert any("per step" in line for line in lines), result.stdout
    assert "Epoch 1/3" not in result.stderr  # --quiet: no progress bar
