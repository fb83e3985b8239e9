"""The first run: ``python -m engine compile`` fills the kernel cache ahead of time, and
fit's progress bar says when its first step compiles, without counting it as step time."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engine
from engine import activations, losses, optim, precompile, trainer

ROOT = Path(__file__).resolve().parent.parent


def test_the_plan_covers_every_activation_loss_and_optimizer_per_dtype():
    runs = precompile.plan()
    for dtype in precompile.DTYPES:
        mine = [run for run in runs if run["dtype"] == dtype]
        assert {run["activation"] for run in mine if "activation" in run} == set(activations.NAMES)
        assert {run["loss"] for run in mine if "loss" in run} == set(losses.NAMES)
        assert {run["optimizer"] for run in mine if "optimizer" in run} == set(optim.NAMES)
    assert precompile.plan(("float32",), ["tanh"], [], []) == [{"dtype": "float32", "activation": "tanh"}]


@pytest.mark.parametrize("options", [{"activation": "prelu"}, {"loss": "binary_cross_entropy"},
                                     {"loss": "huber", "dtype": "float64"}, {"optimizer": "nadam"}])
def test_each_run_trains_evaluates_and_predicts(options):
    precompile._exercise("numba", **{"dtype": "float32", **options})


def test_compile_fills_an_empty_cache(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "engine", "compile", "--backend", "numba", "--dtypes", "float32",
                           "--activations", "relu", "--losses", "mse", "--optimizers", "sgd", "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "compiled the kernels of 3 training runs on numba" in done.stdout
    cached = {path.name.split(".")[0] for path in tmp_path.rglob("*.nbi")}
    assert {"dense", "losses", "optim"} <= cached  # the modules of the dense, loss and optimizer kernels


@pytest.mark.parametrize("argv, message", [(["--dtypes", "float16"], "--dtypes: expected names among"),
                                           (["--activations", "relu,swish"], "--activations: expected names"),
                                           (["--optimizers", ""], "--optimizers: expected names")])
def test_compile_refuses_unknown_names(argv, message):
    done = subprocess.run([sys.executable, "-m", "engine", "compile", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2 and message in done.stderr


def test_the_first_step_says_it_compiles_and_is_not_counted_by_the_bar(monkeypatch, capsys):
    monkeypatch.setattr(trainer, "_STEPS_TAKEN", set())
    X = np.random.default_rng(0).standard_normal((96, 4)).astype(np.float32)
    y = np.arange(96) % 3
    model = engine.MLP([4, 8, 3], seed=0, backend="numba")
    fit = engine.Trainer(model, optimizer=engine.SGD(lr=0.1)).fit
    fit(X, y, epochs=1, batch_size=32, verbose=1)
    first = capsys.readouterr().out
    assert "Epoch 1/1 (compiling kernels)" in first
    fit(X, y, epochs=1, batch_size=32, verbose=1)
    assert "compiling" not in capsys.readouterr().out  # a step of this kind has run in this process


def test_after_the_first_step_the_bar_restarts_its_clock(monkeypatch):
    import io
    import time

    from tqdm import tqdm
    monkeypatch.setattr(trainer, "_STEPS_TAKEN", set())
    fitting = engine.Trainer(engine.MLP([4, 8, 3], seed=0, backend="numpy"))
    with tqdm(total=5, file=io.StringIO(), mininterval=0) as bar:
        bar.set_description("Epoch 1/1 (compiling kernels)")
        time.sleep(0.3)  # the compilation
        fitting._compiled(bar, "Epoch 1/1")
        bar.update(1)
        assert bar.desc.startswith("Epoch 1/1") and "compiling" not in bar.desc
        assert bar.format_dict["elapsed"] < 0.3  # the rate and ETA start after the first step
    assert fitting._kind_of_step() in trainer._STEPS_TAKEN
