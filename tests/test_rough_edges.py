"""Issue 11's rough edges, one test (or group) each, plus model.summary(): messages that name
the file, the variable or the argument at fault, checks that come before training rather
than after an epoch, and no stray warning or stream."""
import os
import re
import subprocess
import sys
import traceback
import warnings

import numpy as np
import pytest

import engine
from engine import backend as backend_module
from engine.callbacks import LambdaCallback, ModelCheckpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def classification(n=40, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, np.argmax(X @ rng.normal(size=(d, k)), axis=1)


def assert_weights_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------ 1. files that are not fusedense files
def _text(path):
    path.write_text("sizes: 4, 8, 3\n")


def _foreign_npz(path):
    with open(path, "wb") as f:
        np.savez(f, a=np.random.default_rng(0).normal(size=(3, 4)), b=np.arange(5))


def _npy(path):
    with open(path, "wb") as f:
        np.save(f, np.ones(3))


def _meta_not_json(path):
    with open(path, "wb") as f:
        np.savez(f, meta=np.array("not json"), w0=np.ones(3))


def _other_format(path):
    with open(path, "wb") as f:
        np.savez(f, meta=np.array('{"format": "somebody-else"}'))


def _empty(path):
    path.write_bytes(b"")


FOREIGN_FILES = {"text": _text, "foreign_npz": _foreign_npz, "npy": _npy, "meta_not_json": _meta_not_json,
                 "other_format": _other_format, "empty": _empty}


def assert_not_a_fusedense_file(error, path, kind):
    message = str(error.value)
    assert str(path) in message and f"not a fusedense {kind}" in message, message
    # NumPy's message suggests allow_pickle=True: it must not reach the user, chained or not.
    shown = "".join(traceback.format_exception(error.type, error.value, error.tb))
    assert "allow_pickle" not in shown and "pickle.load" not in shown, shown


@pytest.mark.parametrize("make", FOREIGN_FILES.values(), ids=FOREIGN_FILES.keys())
def test_load_model_of_a_foreign_file_says_it_is_not_a_model(make, tmp_path):
    path = tmp_path / "file.npz"
    make(path)
    with pytest.raises(ValueError) as error:
        engine.load_model(path, backend="numpy")
    assert_not_a_fusedense_file(error, path, "model")


@pytest.mark.parametrize("make", FOREIGN_FILES.values(), ids=FOREIGN_FILES.keys())
def test_load_checkpoint_of_a_foreign_file_says_it_is_not_a_checkpoint(make, tmp_path):
    path = tmp_path / "file.npz"
    make(path)
    trainer = engine.Trainer(engine.MLP([4, 3], seed=0, backend="numpy"))
    before = trainer.model.get_weights()
    with pytest.raises(ValueError) as error:
        trainer.load_checkpoint(path)
    assert_not_a_fusedense_file(error, path, "checkpoint")
    assert_weights_equal(trainer.model.get_weights(), before)


def test_model_and_checkpoint_files_are_not_taken_for_each_other(tmp_path):
    trainer = engine.Trainer(engine.MLP([4, 3], seed=0, backend="numpy"))
    trainer.model.save(tmp_path / "model.npz")
    trainer.save_checkpoint(tmp_path / "checkpoint.npz")
    with pytest.raises(ValueError, match="not a fusedense model.*fusedense-checkpoint"):
        engine.load_model(tmp_path / "checkpoint.npz")
    with pytest.raises(ValueError, match="not a fusedense checkpoint.*fusedense-model"):
        trainer.load_checkpoint(tmp_path / "model.npz")


# ----------------------------------------- 2. monitors checked before the first epoch
def _never_trained(trainer, weights, events):
    assert trainer.optimizer.iterations == 0
    assert_weights_equal(trainer.model.get_weights(), weights)
    assert events == []  # not even on_train_begin ran


@pytest.mark.parametrize("make, missing", [
    (lambda: engine.EarlyStopping("val_loss"), "val_loss"),
    (lambda: ModelCheckpoint("never.npz", monitor="val_accuracy", save_best_only=True), "val_accuracy"),
    (lambda: ModelCheckpoint("never-{val_loss:.3f}.npz"), "val_loss"),
])
@pytest.mark.parametrize("where", ["trainer", "fit"])
def test_monitor_without_validation_fails_before_training(make, missing, where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X, y = classification()
    events = []
    spy = LambdaCallback(on_train_begin=lambda logs: events.append("begin"))
    callback = make()
    trainer = engine.Trainer(engine.MLP([4, 5, 3], seed=0, backend="numpy"),
                             callbacks=[spy, callback] if where == "trainer" else [spy])
    weights = trainer.model.get_weights()
    with pytest.raises(ValueError) as error:
        trainer.fit(X, y, epochs=2, verbose=0, callbacks=[callback] if where == "fit" else [])
    message = str(error.value)
    assert missing in message and "validation_data" in message and "'loss'" in message, message
    _never_trained(trainer, weights, events)
    assert os.listdir(tmp_path) == []


def test_misspelt_monitor_fails_before_training_and_lists_the_logged_names():
    X, y = classification()
    events = []
    trainer = engine.Trainer(engine.MLP([4, 5, 3], seed=0, backend="numpy"),
                             callbacks=[LambdaCallback(on_train_begin=lambda logs: events.append("begin")),
                                        engine.EarlyStopping("val_acuracy")])
    weights = trainer.model.get_weights()
    with pytest.raises(ValueError, match=r"'val_acuracy'.*'val_loss', 'val_accuracy'"):
        trainer.fit(X, y, epochs=2, verbose=0, validation_split=0.25)
    _never_trained(trainer, weights, events)


def test_checkpoint_of_every_epoch_needs_no_validation(tmp_path):
    X, y = classification()
    engine.Trainer(engine.MLP([4, 3], seed=0, backend="numpy")).fit(
        X, y, epochs=2, verbose=0, callbacks=[ModelCheckpoint(tmp_path / "m{epoch}.npz")])
    assert sorted(os.listdir(tmp_path)) == ["m1.npz", "m2.npz"]


# ----------------------------------------------------- 7. one callback, not in a list
def test_a_single_callback_is_accepted_by_trainer_and_fit():
    X, y = classification()
    epochs = []
    recorder = LambdaCallback(on_epoch_end=lambda epoch, logs: epochs.append(epoch))
    trainer = engine.Trainer(engine.MLP([4, 3], seed=0, backend="numpy"), callbacks=recorder)
    trainer.fit(X, y, epochs=2, verbose=0)
    trainer.fit(X, y, epochs=1, verbose=0, callbacks=LambdaCallback(on_epoch_end=lambda e, logs: epochs.append(-1)))
    assert epochs == [0, 1, 0, -1]


@pytest.mark.parametrize("callbacks, named", [(print, r"\bcallbacks\b"), (3, r"\bcallbacks\b"),
                                              ([print], r"callbacks\[0\]")])
def test_what_is_not_a_callback_is_a_type_error_naming_callbacks(callbacks, named):
    model = engine.MLP([4, 3], seed=0, backend="numpy")
    with pytest.raises(TypeError, match=named):
        engine.Trainer(model, callbacks=callbacks)
    X, y = classification()
    with pytest.raises(TypeError, match=named):
        engine.Trainer(model).fit(X, y, verbose=0, callbacks=callbacks)


# ----------------------------------------------------------- 8. ENGINE_BACKEND named
def test_unknown_engine_backend_names_the_variable(monkeypatch):
    monkeypatch.setenv("ENGINE_BACKEND", "bogus")
    monkeypatch.setattr(backend_module, "_selected", None)
    with pytest.raises(ValueError, match=r"ENGINE_BACKEND.*'numba'.*'bogus'"):
        engine.get_backend()


def test_unavailable_engine_backend_names_the_variable(monkeypatch):
    missing = [name for name in ("cupy", "numba") if name not in engine.available_backends()]
    if not missing:
        pytest.skip("every backend runs here")
    monkeypatch.setenv("ENGINE_BACKEND", missing[0])
    monkeypatch.setattr(backend_module, "_selected", None)
    with pytest.raises(engine.BackendUnavailable, match=f"ENGINE_BACKEND={missing[0]}"):
        engine.get_backend()


# ---------------------------------------------------- 9. the command line's own name
def test_help_names_the_console_script(monkeypatch, capsys):
    from engine.cli import main
    monkeypatch.setattr(sys, "argv", [os.path.join("venv", "bin", "fusedense"), "--help"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage: fusedense ")


def test_help_names_python_dash_m_engine():
    result = subprocess.run([sys.executable, "-m", "engine", "demo", "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m engine demo ")


def test_every_demo_option_has_help(capsys):
    from engine.cli import main
    with pytest.raises(SystemExit):
        main(["demo", "--help"], prog="fusedense")
    out = capsys.readouterr().out
    for option in ("--epochs", "--batch-size", "--seed", "--backend", "--quiet"):
        # "  --option [METAVAR]   its help" on one line
        assert re.search(rf"^  {option}( [A-Z]+)?  +\w", out, re.MULTILINE), f"{option} has no help:\n{out}"


@pytest.mark.parametrize("argv, option", [(["--epochs", "0"], "--epochs"), (["--batch-size", "x"], "--batch-size"),
                                          (["--seed", "-1"], "--seed")])
def test_demo_rejects_bad_numbers_before_running(argv, option, capsys):
    from engine.cli import main
    with pytest.raises(SystemExit) as stop:
        main(["demo", *argv], prog="fusedense")
    assert stop.value.code == 2
    assert option in capsys.readouterr().err


# --------------------------------------------- 10a. huge float64 input: no warning
def _huge_rows(n=8, d=4):
    X = np.ones((n, d))
    X[0, 0] = X[1, 1] = 1e308  # finite in float64; their sum is not
    return X


def test_huge_finite_float64_input_raises_no_numpy_warning(backend_name):
    model = engine.MLP([4, 5, 3], seed=0, backend=backend_name, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.predict(_huge_rows()).shape == (8, 3)  # valid input: predicted, silently


@pytest.mark.parametrize("values", [(1e308, 1e308), (1e308, -1e308), (np.inf, -np.inf)],
                         ids=["overflow", "overflow_both_signs", "inf_minus_inf"])
def test_input_overflowing_float32_is_an_error_without_warning(values, backend_name):
    model = engine.MLP([4, 3], seed=0, backend=backend_name)
    X = np.ones((8, 4))
    X[0, 0], X[3, 2] = values
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"\bX\b"):
            model.predict(X)


def test_fit_on_huge_float64_input_raises_only_non_finite_error():
    """The error of a step that overflows is NonFiniteError; the input checks add no warning
    before it (the numba backend's kernels raise none; the NumPy reference's arithmetic would
    warn about its own overflow)."""
    if "numba" not in engine.available_backends():
        pytest.skip("the numba backend cannot run here")
    trainer = engine.Trainer(engine.MLP([4, 5, 3], seed=0, backend="numba", dtype="float64"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(engine.NonFiniteError):
            trainer.fit(_huge_rows(), np.arange(8) % 3, epochs=1, verbose=0)


# ---------------------------------------------------- 10b. set_num_threads names n
def test_too_many_threads_names_n_and_the_limit():
    if "numba" not in engine.available_backends():
        pytest.skip("the numba backend cannot run here")
    import numba
    limit = numba.config.NUMBA_NUM_THREADS
    before = engine.get_num_threads()
    with pytest.raises(ValueError, match=rf"\bn\b.*\[1, {limit}\].*NUMBA_NUM_THREADS.*\b{limit + 1}\b"):
        engine.set_num_threads(limit + 1)
    assert engine.get_num_threads() == before


# -------------------------------------------------- 10c. one stream for fit's output
@pytest.mark.parametrize("verbose", [1, 2])
def test_progress_and_epoch_lines_both_go_to_stdout(verbose, capsys):
    X, y = classification()
    engine.Trainer(engine.MLP([4, 3], seed=0, backend="numpy")).fit(X, y, epochs=2, batch_size=16,
                                                                     verbose=verbose)
    out, err = capsys.readouterr()
    assert err == ""
    assert "1/2" in out and "2/2" in out


# ------------------------------------------------------------------ model.summary()
def test_summary_lists_every_layer_and_the_totals(backend_name):
    model = engine.MLP([6, 16, 8, 3], activation=["relu", "prelu"], dropout=[0.25, 0.0], output="softmax",
                       seed=0, backend=backend_name, dtype="float64")
    lines = []
    assert model.summary(print_fn=lines.append) is None
    text = "\n".join(lines)
    assert backend_name in lines[0] and "float64" in lines[0]
    weights = model.get_weights()  # W1 b1 | W2 b2 slope2 | W3 b3
    per_layer = [sum(w.size for w in weights[:2]), sum(w.size for w in weights[2:5]), sum(w.size for w in weights[5:])]
    expected = [("dense_1", "(None, 6)", "(None, 16)", per_layer[0], "relu", "0.25"),
                ("dense_2", "(None, 16)", "(None, 8)", per_layer[1], "prelu", "0"),
                ("dense_3", "(None, 8)", "(None, 3)", per_layer[2], "logits", "-")]
    for name, shape_in, shape_out, count, activation, dropout in expected:
        row = next(line for line in lines if line.startswith(name + " ")).split()
        assert " ".join(row[1:5]) == f"{shape_in} {shape_out}"
        assert int(row[5].replace(",", "")) == count
        assert activation in " ".join(row[6:-1]) and row[-1] == dropout
    assert f"Total parameters: {model.num_parameters:,} " in text
    assert model.num_parameters == sum(per_layer)
    assert "softmax" in text


def test_summary_prints_by_default(capsys):
    model = engine.MLP([784, 512, 10], backend="numpy")
    model.summary()
    out = capsys.readouterr().out
    assert "Total parameters: 407,050 (1.553 MiB)" in out  # float32: 4 bytes each
