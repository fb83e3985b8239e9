"""ModelCheckpoint, CSVLogger and LambdaCallback (Keras semantics): the files they write, what
is in them, best-only saving, atomic writes, and their argument checks."""
import csv
import itertools
import os
import stat

import numpy as np
import pytest

import engine
from engine.callbacks import CSVLogger, LambdaCallback, ModelCheckpoint

# Callbacks are host code, the same on every backend: the reference backend suffices.
BACKEND = "numpy"


def classification(n=48, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, np.argmax(X @ rng.normal(size=(d, k)), axis=1)


def make_trainer(callbacks=(), lr=0.05, seed=0):
    model = engine.MLP([4, 8, 3], seed=seed, backend=BACKEND, dtype="float64")
    return engine.Trainer(model, optimizer=engine.AdamW(lr=lr), callbacks=callbacks)


def weights_recorder(model):
    """A LambdaCallback that keeps ``model``'s weights at the end of each epoch, and that list."""
    per_epoch = []
    return LambdaCallback(on_epoch_end=lambda epoch, logs: per_epoch.append(model.get_weights())), per_epoch


def assert_weights_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def contrary_fit(callbacks, epochs=4):
    """Validation on other labels: val_loss rises (and val_accuracy falls) every epoch, so
    the first epoch is the best. Returns the history and the weights after each epoch."""
    X, y = classification()
    trainer = make_trainer()
    recorder, per_epoch = weights_recorder(trainer.model)
    history = trainer.fit(X, y, epochs=epochs, batch_size=16, validation_data=(X, (y + 1) % 3), verbose=0,
                          callbacks=[*callbacks, recorder]).history
    val = history["val_loss"]
    assert all(b > a for a, b in itertools.pairwise(val)), f"premise: val_loss should rise every epoch, got {val}"
    return history, per_epoch


# ------------------------------------------------------------------ ModelCheckpoint
def test_checkpoint_every_epoch_fills_in_the_format_fields(tmp_path):
    X, y = classification()
    trainer = make_trainer()
    recorder, per_epoch = weights_recorder(trainer.model)
    pattern = "model-{epoch:02d}-{val_loss:.3f}.npz"
    checkpoint = ModelCheckpoint(tmp_path / pattern)
    history = trainer.fit(X, y, epochs=3, batch_size=16, validation_data=(X, y), verbose=0,
                          callbacks=[checkpoint, recorder]).history
    expected = [pattern.format(epoch=e + 1, val_loss=v) for e, v in enumerate(history["val_loss"])]
    assert sorted(os.listdir(tmp_path)) == sorted(expected)
    for name, weights in zip(expected, per_epoch):
        loaded = engine.load_model(tmp_path / name, backend=BACKEND)
        assert loaded.sizes == trainer.model.sizes
        assert_weights_equal(loaded.get_weights(), weights)
    assert checkpoint.last_saved == str(tmp_path / expected[-1])


def test_checkpoint_best_only_saves_only_improvements(tmp_path):
    checkpoint = ModelCheckpoint(tmp_path / "best-{epoch}.npz", save_best_only=True)
    history, per_epoch = contrary_fit([checkpoint])
    assert os.listdir(tmp_path) == ["best-1.npz"]  # epoch 1 only: every later one was worse
    assert checkpoint.best == history["val_loss"][0]
    assert_weights_equal(engine.load_model(tmp_path / "best-1.npz", backend=BACKEND).get_weights(), per_epoch[0])
    # A second run compares with the first run's best (Keras): its epochs, no better, write nothing.
    os.remove(tmp_path / "best-1.npz")
    contrary_fit([checkpoint])
    assert os.listdir(tmp_path) == []


def test_checkpoint_best_only_overwrites_one_path_with_each_improvement(tmp_path):
    X, y = classification()
    trainer = make_trainer(lr=0.01)
    recorder, per_epoch = weights_recorder(trainer.model)
    history = trainer.fit(X, y, epochs=4, batch_size=16, validation_data=(X, y), verbose=0,
                          callbacks=[ModelCheckpoint(tmp_path / "best.npz", save_best_only=True), recorder]).history
    val = history["val_loss"]
    assert all(b < a for a, b in itertools.pairwise(val)), f"premise: val_loss should fall every epoch, got {val}"
    assert os.listdir(tmp_path) == ["best.npz"]
    assert_weights_equal(engine.load_model(tmp_path / "best.npz", backend=BACKEND).get_weights(), per_epoch[-1])


@pytest.mark.parametrize("monitor, mode, saved_epochs", [
    ("val_loss", "auto", [1]), ("val_loss", "min", [1]), ("val_loss", "max", [1, 2, 3, 4]),
    ("val_accuracy", "auto", [1]),  # accuracy improves upwards; it only falls here
])
def test_checkpoint_mode(monitor, mode, saved_epochs, tmp_path):
    contrary_fit([ModelCheckpoint(tmp_path / "{epoch}.npz", monitor=monitor, save_best_only=True, mode=mode)])
    assert sorted(int(name.split(".")[0]) for name in os.listdir(tmp_path)) == saved_epochs


def test_checkpoint_of_the_trainer_resumes_exactly(tmp_path):
    X, y = classification()
    continuous = make_trainer()
    continuous.fit(X, y, epochs=2, batch_size=16, verbose=0)

    first = make_trainer()
    first.fit(X, y, epochs=1, batch_size=16, verbose=0,
              callbacks=ModelCheckpoint(tmp_path / "ckpt.npz", save="checkpoint"))
    resumed = make_trainer(seed=5)
    resumed.load_checkpoint(tmp_path / "ckpt.npz")
    assert resumed.optimizer.iterations == first.optimizer.iterations == 3
    resumed.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert_weights_equal(resumed.model.get_weights(), continuous.model.get_weights())


def test_checkpoint_creates_missing_directories(tmp_path):
    X, y = classification()
    make_trainer().fit(X, y, epochs=2, batch_size=16, verbose=0,
                       callbacks=[ModelCheckpoint(tmp_path / "run" / "epoch-{epoch}" / "model.npz")])
    assert sorted(os.listdir(tmp_path / "run")) == ["epoch-1", "epoch-2"]
    assert os.listdir(tmp_path / "run" / "epoch-2") == ["model.npz"]


def _failing_savez(f, **arrays):
    f.write(b"the first bytes of an archive")
    raise OSError("no space left on device")


def test_failed_checkpoint_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    X, y = classification()
    path = tmp_path / "model.npz"
    trainer = make_trainer(callbacks=[ModelCheckpoint(path)])
    trainer.fit(X, y, epochs=1, batch_size=16, verbose=0)
    old_bytes, old_weights = path.read_bytes(), trainer.model.get_weights()
    monkeypatch.setattr(np, "savez", _failing_savez)
    with pytest.raises(OSError, match="no space left"):
        trainer.fit(X, y, epochs=1, batch_size=16, verbose=0)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.npz"]  # no partial or temporary file left behind
    assert path.read_bytes() == old_bytes
    assert_weights_equal(engine.load_model(path, backend=BACKEND).get_weights(), old_weights)


def test_failed_first_write_leaves_no_file(tmp_path, monkeypatch):
    model = engine.MLP([4, 3], backend=BACKEND)
    monkeypatch.setattr(np, "savez", _failing_savez)
    with pytest.raises(OSError):
        model.save(tmp_path / "model.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_saved_file_has_the_permissions_open_gives(tmp_path):
    """The temporary file is renamed into place: it must not keep a private mode (0600)."""
    engine.MLP([4, 3], backend=BACKEND).save(tmp_path / "model.npz")
    with open(tmp_path / "plain", "wb"):
        pass
    assert stat.S_IMODE(os.stat(tmp_path / "model.npz").st_mode) == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)


@pytest.mark.parametrize("kwargs, error, argument", [
    ({"path": 3}, TypeError, "path"),
    ({"path": "model-{}.npz"}, ValueError, "path"),
    ({"path": "model-{0}.npz"}, ValueError, "path"),
    ({"path": "model-{epoch.npz"}, ValueError, "path"),
    ({"path": "model-{val_loss:02d}.npz"}, ValueError, "path"),  # a float cannot take "d"
    ({"monitor": 1}, TypeError, "monitor"),
    ({"mode": "up"}, ValueError, "mode"),
    ({"save": "weights"}, ValueError, "save"),
    ({"save_best_only": "yes"}, TypeError, "save_best_only"),
])
def test_checkpoint_bad_arguments(kwargs, error, argument):
    with pytest.raises(error, match=argument):
        ModelCheckpoint(**{"path": "model.npz", **kwargs})


# ------------------------------------------------------------------------ CSVLogger
def read_csv(path, separator=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=separator))


def test_csv_logger_writes_a_header_and_one_row_per_epoch(tmp_path):
    X, y = classification()
    path = tmp_path / "log.csv"
    history = make_trainer().fit(X, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0,
                                 callbacks=[CSVLogger(path)]).history
    header, *rows = read_csv(path)
    assert header == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert [int(row[0]) for row in rows] == [0, 1, 2]
    for column, name in enumerate(header[1:], start=1):
        assert [float(row[column]) for row in rows] == history[name]  # full precision


def test_csv_logger_separator_and_append(tmp_path):
    X, y = classification()
    path = tmp_path / "log.tsv"
    trainer = make_trainer()
    trainer.fit(X, y, epochs=2, batch_size=16, verbose=0, callbacks=[CSVLogger(path, separator="\t")])
    trainer.fit(X, y, epochs=3, batch_size=16, verbose=0, callbacks=[CSVLogger(path, separator="\t", append=True)])
    header, *rows = read_csv(path, "\t")
    assert header == ["epoch", "loss", "accuracy", "lr"]
    assert [row[0] for row in rows] == ["0", "1", "0", "1", "2"]  # the header once
    trainer.fit(X, y, epochs=1, batch_size=16, verbose=0, callbacks=[CSVLogger(path, separator="\t")])
    assert len(read_csv(path, "\t")) == 2  # append=False starts afresh


def test_csv_logger_append_to_a_new_file_writes_the_header(tmp_path):
    X, y = classification()
    path = tmp_path / "new.csv"
    make_trainer().fit(X, y, epochs=1, batch_size=16, verbose=0, callbacks=[CSVLogger(path, append=True)])
    assert [row[0] for row in read_csv(path)] == ["epoch", "0"]


def test_csv_logger_rows_are_on_disk_when_the_epoch_ends(tmp_path):
    X, y = classification()
    path = tmp_path / "log.csv"
    rows_seen = []
    after = LambdaCallback(on_epoch_end=lambda epoch, logs: rows_seen.append(len(read_csv(path)) - 1))
    make_trainer().fit(X, y, epochs=3, batch_size=16, verbose=0, callbacks=[CSVLogger(path), after])
    assert rows_seen == [1, 2, 3]


@pytest.mark.parametrize("kwargs, error, argument", [
    ({"path": None}, TypeError, "path"),
    ({"separator": ";;"}, ValueError, "separator"),
    ({"separator": ""}, ValueError, "separator"),
    ({"separator": 9}, TypeError, "separator"),
    ({"append": "no"}, TypeError, "append"),
])
def test_csv_logger_bad_arguments(kwargs, error, argument):
    with pytest.raises(error, match=argument):
        CSVLogger(**{"path": "log.csv", **kwargs})


def test_csv_logger_unwritable_path_fails_before_training(tmp_path):
    X, y = classification()
    trainer = make_trainer()
    before = trainer.model.get_weights()
    with pytest.raises(FileNotFoundError):
        trainer.fit(X, y, epochs=1, verbose=0, callbacks=[CSVLogger(tmp_path / "missing" / "log.csv")])
    assert_weights_equal(trainer.model.get_weights(), before)
    assert trainer.optimizer.iterations == 0


# ------------------------------------------------------------------- LambdaCallback
def test_lambda_callback_calls_each_function_with_keras_arguments():
    X, y = classification(n=32)
    events = []
    callback = LambdaCallback(
        on_train_begin=lambda logs: events.append(("train_begin", logs)),
        on_epoch_begin=lambda epoch, logs: events.append(("epoch_begin", epoch, logs)),
        on_batch_end=lambda batch, logs: events.append(("batch_end", batch, sorted(logs))),
        on_epoch_end=lambda epoch, logs: events.append(("epoch_end", epoch, sorted(logs))),
        on_train_end=lambda logs: events.append(("train_end", logs)))
    make_trainer().fit(X, y, epochs=2, batch_size=16, verbose=0, callbacks=[callback])
    epoch = lambda e: [("epoch_begin", e, {}), ("batch_end", 0, ["loss"]), ("batch_end", 1, ["loss"]),
                       ("epoch_end", e, ["accuracy", "loss", "lr"])]
    assert events == [("train_begin", {}), *epoch(0), *epoch(1), ("train_end", {})]


def test_lambda_callback_without_on_batch_end_reads_no_batches(monkeypatch):
    """Only a given on_batch_end costs a device read per batch."""
    X, y = classification(n=64)
    trainer = make_trainer()
    reads = []
    to_host = trainer.model._k.to_host
    monkeypatch.setattr(trainer.model._k, "to_host", lambda array: reads.append(1) or to_host(array))
    epochs = []
    trainer.fit(X, y, epochs=1, batch_size=8, verbose=0,
                callbacks=[LambdaCallback(on_epoch_end=lambda epoch, logs: epochs.append(epoch))])
    assert epochs == [0] and len(reads) == 1  # the end of the epoch only
    reads.clear()
    trainer.fit(X, y, epochs=1, batch_size=8, verbose=0,
                callbacks=[LambdaCallback(on_batch_end=lambda batch, logs: None)])
    assert len(reads) == 8 + 1


@pytest.mark.parametrize("hook", ["on_epoch_begin", "on_epoch_end", "on_batch_end", "on_train_begin",
                                  "on_train_end"])
def test_lambda_callback_rejects_what_cannot_be_called(hook):
    with pytest.raises(TypeError, match=hook):
        LambdaCallback(**{hook: "print"})
