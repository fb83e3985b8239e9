"""Model and checkpoint files: versions, validation of everything read, all-or-nothing
loading, corruption and truncation, and writes that survive SIGKILL."""
import copy
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import engine
from engine import io as engine_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = [4, 6, 3]


def make_trainer(optimizer=None, backend="numpy"):
    model = engine.MLP(SIZES, activation="prelu", dropout=0.1, seed=5, backend=backend)
    return engine.Trainer(model, optimizer=optimizer or engine.NAdam(lr=1e-2))


def trained(optimizer=None):
    trainer = make_trainer(optimizer)
    g = np.random.default_rng(0)
    trainer.fit(g.normal(size=(24, 4)), g.integers(0, 3, 24), epochs=2, batch_size=8, verbose=0)
    return trainer


def everything(trainer):
    saved = trainer.optimizer.state_dict()
    return copy.deepcopy({"weights": trainer.model.get_weights(), "arrays": saved["arrays"],
                          "scalars": saved["scalars"], "iterations": trainer.optimizer.iterations,
                          "rng": trainer._rng.bit_generator.state, "seed": trainer.model._seed})


def assert_unchanged(trainer, before):
    after = everything(trainer)
    assert after["iterations"] == before["iterations"] and after["scalars"] == before["scalars"]
    assert after["rng"] == before["rng"] and after["seed"] == before["seed"]
    for a, b in zip(after["weights"], before["weights"], strict=True):
        np.testing.assert_array_equal(a, b)
    for name in before["arrays"]:
        np.testing.assert_array_equal(after["arrays"][name], before["arrays"][name])


def rewrite(path, edit_meta=None, edit_arrays=None):
    """Rewrite the file at ``path`` with its meta and arrays edited in place (as a corrupted
    or foreign writer would), keeping the .npz layout."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        arrays = {name: data[name] for name in data.files if name != "meta"}
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    with open(path, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


# ----------------------------------------------------------------- versions
@pytest.mark.parametrize("kind", ["model", "checkpoint"])
def test_files_carry_format_and_version(kind, tmp_path):
    trainer = trained()
    path = tmp_path / f"{kind}.npz"
    trainer.model.save(path) if kind == "model" else trainer.save_checkpoint(path)
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
    assert meta["format"] == f"fusedense-{kind}" and meta["version"] == engine_io.FORMAT_VERSION == 1


def test_newer_version_is_refused_with_a_clear_message(tmp_path):
    trainer = trained()
    trainer.model.save(tmp_path / "model.npz")
    trainer.save_checkpoint(tmp_path / "checkpoint.npz")
    for name in ("model.npz", "checkpoint.npz"):
        rewrite(tmp_path / name, edit_meta=lambda meta: meta.update(version=2))
    with pytest.raises(ValueError, match=r"model.npz is a fusedense model file of format version 2, written by a "
                                         r"newer fusedense; this one reads versions up to 1: upgrade"):
        engine.load_model(tmp_path / "model.npz")
    fresh = make_trainer()
    before = everything(fresh)
    with pytest.raises(ValueError, match=r"checkpoint.npz is a fusedense checkpoint file of format version 2"):
        fresh.load_checkpoint(tmp_path / "checkpoint.npz")
    assert_unchanged(fresh, before)


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, None, True])
def test_malformed_version_is_not_a_fusedense_file(version, tmp_path):
    path = tmp_path / "model.npz"
    trained().model.save(path)
    rewrite(path, edit_meta=lambda meta: meta.update(version=version))
    with pytest.raises(ValueError, match=r"model.npz is not a fusedense model file: its format version is"):
        engine.load_model(path)


# ---------------------------------------------------------- model configs
BAD_CONFIGS = {
    "config_missing": lambda c: c.clear(),
    "sizes_strings": lambda c: c.update(sizes=["4", "6", "3"]),
    "sizes_negative": lambda c: c.update(sizes=[4, -6, 3]),
    "sizes_huge": lambda c: c.update(sizes=[4, 10**12, 3]),
    "sizes_not_list": lambda c: c.update(sizes=7),
    "activation_unknown": lambda c: c.update(activation=[{"name": "swishy"}]),
    "activation_not_config": lambda c: c.update(activation=[42]),
    "dtype_float16": lambda c: c.update(dtype="float16"),
    "dropout_two": lambda c: c.update(dropout=[2.0]),
    "seed_negative": lambda c: c.update(seed=-3),
    "unknown_key": lambda c: c.update(colour="blue"),
    "backend_in_config": lambda c: c.update(backend="numpy"),
    "output_unknown": lambda c: c.update(output="tanh"),
}


@pytest.mark.parametrize("edit", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_corrupt_model_config_is_a_value_error_naming_the_file(edit, tmp_path):
    """Not a KeyError or TypeError from deep inside: a ValueError naming the file."""
    path = tmp_path / "model.npz"
    trained().model.save(path)
    rewrite(path, edit_meta=lambda meta: edit(meta["config"]))
    with pytest.raises(ValueError, match=r"model.npz is not a fusedense model file: "):
        engine.load_model(path)


BAD_MODEL_ARRAYS = {
    "missing": lambda a: a.pop("w2"),
    "extra": lambda a: a.update(w99=np.ones(3)),
    "renamed": lambda a: a.update(x0=a.pop("w0")),
    "wrong_shape": lambda a: a.update(w0=np.ones((6, 4))),
    "strings": lambda a: a.update(w1=np.array(["a"] * 6)),
    "complex": lambda a: a.update(w1=np.ones(6, complex)),
    "nan": lambda a: a.update(w0=np.full((4, 6), np.nan)),
}


@pytest.mark.parametrize("edit", BAD_MODEL_ARRAYS.values(), ids=BAD_MODEL_ARRAYS.keys())
def test_model_arrays_are_checked(edit, tmp_path):
    path = tmp_path / "model.npz"
    trained().model.save(path)
    rewrite(path, edit_arrays=edit)
    with pytest.raises(ValueError, match=r"model.npz is not a fusedense model file: "):
        engine.load_model(path)


def test_load_model_bad_backend_is_the_callers_error(tmp_path):
    path = tmp_path / "model.npz"
    trained().model.save(path)
    with pytest.raises(ValueError, match=r"backend must be 'auto' or one of") as error:
        engine.load_model(path, backend="tpu")
    assert "model.npz" not in str(error.value)


# ------------------------------------------------- checkpoints: all or nothing
def _set(name, value):
    return lambda meta: meta.update({name: value})


BAD_CHECKPOINTS = {
    "iterations_negative": (_set("iterations", -1), None, "'iterations' is -1"),
    "iterations_string": (_set("iterations", "7"), None, "'iterations'"),
    "seed_float": (_set("seed", 1.5), None, "'seed'"),
    "scalars_missing": (_set("scalars", {}), None, "optimizer scalars"),
    "scalars_nan": (_set("scalars", {"mu_product": float("nan")}), None, "mu_product"),
    "scalars_string": (_set("scalars", {"mu_product": "x"}), None, "mu_product"),
    "rng_missing": (lambda m: m.pop("rng"), None, "RNG"),
    "rng_garbage": (_set("rng", {"bit_generator": "PCG64", "state": "x"}), None, "RNG"),
    "rng_other_generator": (_set("rng", {"bit_generator": "MT19937"}), None, "RNG"),
    "config_missing_sizes": (lambda m: m["config"].pop("sizes"), None, "'config'"),
    "config_missing_dtype": (lambda m: m["config"].pop("dtype"), None, "no 'dtype'"),
    "opt_array_missing": (None, lambda a: a.pop("opt_exp_avg"), "stores the arrays"),
    "opt_array_extra": (None, lambda a: a.update(opt_momentum=np.ones(3)), "stores the arrays"),
    "opt_array_shape": (None, lambda a: a.update(opt_exp_avg=np.ones(5)), "'opt_exp_avg' has shape"),
    "opt_array_dtype": (None, lambda a: a.update(opt_exp_avg_sq=np.array(["x"] * 57)), "dtype <U1"),
    "opt_array_nan": (None, lambda a: a["opt_exp_avg_sq"].__setitem__(3, np.nan), "finite"),
    "params_inf": (None, lambda a: a["params"].__setitem__(0, np.inf), "finite"),
    "params_missing": (None, lambda a: a.pop("params"), "stores the arrays"),
}


@pytest.mark.parametrize("edit_meta, edit_arrays, part", BAD_CHECKPOINTS.values(), ids=BAD_CHECKPOINTS.keys())
def test_corrupt_checkpoint_changes_nothing(edit_meta, edit_arrays, part, tmp_path):
    """Every value is checked before any is written: a bad field anywhere (the last ones
    read included) leaves weights, optimizer state, step, seed and RNG as they were."""
    path = tmp_path / "checkpoint.npz"
    trained().save_checkpoint(path)
    rewrite(path, edit_meta, edit_arrays)
    trainer = make_trainer()
    trainer.train_step(np.ones((4, 4)), np.arange(4) % 3)  # some state to keep
    before = everything(trainer)
    with pytest.raises(ValueError, match="checkpoint.npz is not a fusedense checkpoint file: ") as error:
        trainer.load_checkpoint(path)
    assert part in str(error.value)
    assert_unchanged(trainer, before)


def test_checkpoint_of_another_architecture_or_optimizer_changes_nothing(tmp_path):
    trained().save_checkpoint(tmp_path / "checkpoint.npz")
    for trainer, pattern in ((make_trainer(engine.Adam()), "optimizer NAdam does not match the trainer's Adam"),
                             (engine.Trainer(engine.MLP([4, 7, 3], activation="prelu", dropout=0.1, backend="numpy"),
                                             optimizer=engine.NAdam()), "checkpoint sizes")):
        before = everything(trainer)
        with pytest.raises(ValueError, match=pattern):
            trainer.load_checkpoint(tmp_path / "checkpoint.npz")
        assert_unchanged(trainer, before)


# ---------------------------------------------------- corruption, truncation
def _huge_header(path):
    """A 'w0' entry whose header claims 2**40 float64 values: refused before allocating."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("w9.npy", buffer.getvalue() + b"\0" * 64)


def test_header_promising_more_data_than_stored_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    trained().model.save(path)
    _huge_header(path)
    with pytest.raises(ValueError, match=r"entry 'w9.npy' is truncated or its header is corrupt"):
        engine.load_model(path)


@pytest.mark.parametrize("kind", ["model", "checkpoint"])
def test_every_truncation_and_many_corruptions_are_refused_cleanly(kind, tmp_path):
    """A file cut at any length, or with a byte changed anywhere: a ValueError naming the
    file, or (a byte the format does not use) the file loads as it was saved. Never another
    exception, never different weights."""
    trainer = trained()
    good = tmp_path / "good.npz"
    trainer.model.save(good) if kind == "model" else trainer.save_checkpoint(good)
    blob = good.read_bytes()
    expected = trainer.model.get_weights()
    bad = tmp_path / "bad.npz"

    def outcome(content):
        bad.write_bytes(content)
        target = make_trainer()
        try:
            if kind == "model":
                weights = engine.load_model(bad, backend="numpy").get_weights()
            else:
                target.load_checkpoint(bad)
                weights = target.model.get_weights()
        except ValueError as error:
            assert str(bad) in str(error), str(error)
            return "refused"
        for a, b in zip(weights, expected, strict=True):
            np.testing.assert_array_equal(a, b)
        return "loaded"

    cuts = sorted(set(range(0, len(blob), max(1, len(blob) // 300))) | {len(blob) - 1})
    assert all(outcome(blob[:cut]) == "refused" for cut in cuts)
    g = np.random.default_rng(1)
    results = []
    for position in g.integers(0, len(blob), 300):
        corrupted = bytearray(blob)
        corrupted[position] ^= 1 << int(g.integers(0, 8))
        results.append(outcome(bytes(corrupted)))
    assert results.count("refused") > 200  # nearly every byte matters (CRCs, headers, data)


# ---------------------------------------------------------------- SIGKILL
_SAVE_FOREVER = textwrap.dedent("""
    import sys
    import numpy as np
    import engine
    path = sys.argv[1]
    model = engine.MLP([16, 128, 4], seed=2, backend="numpy")
    trainer = engine.Trainer(model, optimizer=engine.Adam(lr=1e-3))
    g = np.random.default_rng(0)
    X, y = g.normal(size=(64, 16)), g.integers(0, 4, 64)
    while True:
        trainer.train_step(X, y)
        trainer.save_checkpoint(path)
        print(trainer.step, flush=True)
""")
KILLS = int(os.environ.get("FUSEDENSE_SIGKILL_LOOPS", "12"))


def _reference_weights(n_steps):
    """Weights after 1..n_steps steps of _SAVE_FOREVER's training, by step."""
    model = engine.MLP([16, 128, 4], seed=2, backend="numpy")
    trainer = engine.Trainer(model, optimizer=engine.Adam(lr=1e-3))
    g = np.random.default_rng(0)
    X, y = g.normal(size=(64, 16)), g.integers(0, 4, 64)
    by_step = {}
    for _ in range(n_steps):
        trainer.train_step(X, y)
        by_step[trainer.step] = model.get_weights()
    return by_step, (X, y)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX")
def test_sigkill_while_saving_checkpoints_leaves_the_last_complete_one(tmp_path):
    """A process saving a checkpoint after every step is killed at a random moment, again
    and again (FUSEDENSE_SIGKILL_LOOPS times, 12 by default); each time the file at the
    path is the complete checkpoint of some step the process finished, which loads and
    resumes: its weights are exactly that step's, and training goes on from it."""
    path = tmp_path / "checkpoint.npz"
    g = np.random.default_rng(3)
    for kill in range(KILLS):
        child = subprocess.Popen([sys.executable, "-c", _SAVE_FOREVER, str(path)], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
        try:
            # Kill after a random number of saves (a few), at a random moment inside one.
            wanted = int(g.integers(1, 6))
            saved = [int(child.stdout.readline()) for _ in range(wanted)]
            time.sleep(float(g.uniform(0, 0.01)))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        trainer = engine.Trainer(engine.MLP([16, 128, 4], seed=99, backend="numpy"),
                                 optimizer=engine.Adam(lr=1e-3))
        trainer.load_checkpoint(path)
        step = trainer.step
        assert step >= saved[-1], (kill, step, saved)  # at least the last save reported
        reference, (X, y) = _reference_weights(step + 1)
        for a, b in zip(trainer.model.get_weights(), reference[step], strict=True):
            np.testing.assert_array_equal(a, b)
        trainer.train_step(X, y)  # resumes: the next step is the uninterrupted run's
        for a, b in zip(trainer.model.get_weights(), reference[step + 1], strict=True):
            np.testing.assert_array_equal(a, b)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "checkpoint.npz"]
    assert all(name.startswith(".checkpoint.npz.") and name.endswith(".tmp") for name in leftovers), leftovers
