"""Saving models and checkpoints as .npz files (config and state as JSON, arrays as arrays).

A file is written under a temporary name and renamed into place, so its path holds the
old file or the new one, never a partial one. Reading never unpickles: a file this
module did not write is a ValueError naming it.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import struct
import zipfile
import zlib

import numpy as np

from . import backend as backend_module
from .model import MLP
from .validation import check_finite

FORMAT_VERSION = 1  # what save_model/save_checkpoint write; _read refuses newer ones


def _write(path, meta, arrays):
    path = os.fspath(path)
    # In the target's directory: os.replace is atomic only within one file system.
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        # O_EXCL never reuses someone else's file; 0o666 leaves the permissions to the umask,
        # as open(path, "wb") would.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        # Through a file object, so np.savez writes to the name given (no ".npz" appended).
        with open(os.open(temporary, flags, 0o666), "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file at path
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _bad_file(path, kind, why):
    return ValueError(f"{os.fspath(path)} is not a fusedense {kind} file: {why}")


# What a corrupt or truncated archive raises while being read (never a reason to unpickle):
# zipfile's own errors, struct's for a mangled record, OSError for a seek to a corrupt offset, NotImplementedError for an unknown
# compression method, RuntimeError for an entry marked encrypted.
_UNREADABLE = (ValueError, KeyError, EOFError, OverflowError, zipfile.BadZipFile, zlib.error, struct.error,
               NotImplementedError, RuntimeError, RecursionError, OSError)
# The OSErrors that are about the path, not the file's content: the caller's to see.
_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _entry_header(archive, info):
    """(shape, dtype, bytes of data stored) of the .npy entry ``info`` of an .npz archive."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        header_size = f.tell()
    return shape, dtype, info.file_size - header_size


def _check_header(name, header, foreign):
    """Refuse an entry that holds objects or promises more data than it stores (a corrupt
    shape must not become a huge allocation)."""
    shape, dtype, stored = header
    if dtype.hasobject:
        raise foreign(f"its entry {name!r} holds Python objects, which a fusedense file never does")
    if math.prod(shape) * dtype.itemsize > stored:
        raise foreign(f"its entry {name!r} is truncated or its header is corrupt (shape {shape}, dtype {dtype})")


def _read(path, kind):
    """(meta, arrays) of a file ``_write`` wrote as a fusedense ``kind`` ("model" or
    "checkpoint") of a format version this code reads; anything else is a ValueError
    naming ``path``: a foreign, truncated or corrupt file, or one of a newer version."""
    def foreign(why):
        return _bad_file(path, kind, why)

    try:
        data = np.load(path, allow_pickle=False)
    except _PATH_ERRORS:
        raise
    except _UNREADABLE:
        # NumPy's own message for a file it cannot parse suggests allow_pickle=True, which a
        # model file never needs: from None keeps it out of the traceback.
        raise foreign("it is not an .npz archive") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise foreign("it holds a single array (.npy), not an .npz archive")
    with data:
        if "meta" not in data.files:
            raise foreign(f"its archive has no 'meta' entry (entries: {', '.join(data.files) or 'none'})")
        try:
            headers = {info.filename: _entry_header(data.zip, info) for info in data.zip.infolist()}
        except _UNREADABLE:
            raise foreign("an entry's header cannot be read (a truncated or corrupt file)") from None
        for name, header in headers.items():
            _check_header(name, header, foreign)
        try:
            meta = json.loads(str(data["meta"]))
            arrays = {name: data[name] for name in data.files if name != "meta"}
        except _UNREADABLE:
            raise foreign("its 'meta' entry is not JSON or an entry cannot be read without unpickling "
                          "(a truncated or corrupt file)") from None
    if not isinstance(meta, dict) or meta.get("format") != f"fusedense-{kind}":
        found = meta.get("format") if isinstance(meta, dict) else None
        raise foreign(f"its format is {found!r}, not 'fusedense-{kind}'")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise foreign(f"its format version is {version!r}, not a positive integer")
    if version > FORMAT_VERSION:
        raise ValueError(f"{os.fspath(path)} is a fusedense {kind} file of format version {version}, written by a "
                         f"newer fusedense; this one reads versions up to {FORMAT_VERSION}: upgrade fusedense "
                         "to load it")
    return meta, arrays


def _config(meta, path, kind):
    """The model configuration stored in ``meta``: a dict holding at least ``sizes``."""
    config = meta.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("sizes"), list):
        raise _bad_file(path, kind, f"its 'config' is not a model configuration with 'sizes'; got {config!r}")
    return config


def _stored_parameters(arrays):
    """How many values the file's arrays hold: a model configuration needing more is corrupt
    (checked before it allocates anything)."""
    return sum(a.size for a in arrays.values())


def _dense_parameters(sizes):
    """W and b of every layer of ``sizes`` (a lower bound on the parameters; PReLU adds slopes)."""
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
        return 0  # not sizes at all: MLP says what is wrong with them
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def save_model(model, path):
    _write(path, {"format": "fusedense-model", "version": FORMAT_VERSION, "config": model.config()},
           {f"w{i}": w for i, w in enumerate(model.get_weights())})


def load_model(path, backend=None):
    """The MLP saved at ``path`` by ``model.save`` (on ``backend``, default the current one).
    A file that is not a complete fusedense model of a version this code reads is a
    ValueError naming it."""
    if backend is not None:
        backend_module.module(backend)  # a bad backend is the caller's error, not the file's
    meta, arrays = _read(path, "model")
    config = _config(meta, path, "model")
    if _dense_parameters(config["sizes"]) > _stored_parameters(arrays):
        raise _bad_file(path, "model", f"its sizes {config['sizes']} need more parameters than it stores "
                                       f"({_stored_parameters(arrays)})")
    try:
        model = MLP(backend=backend, **config)
    except (TypeError, ValueError) as error:
        raise _bad_file(path, "model", f"its configuration is not valid ({error})") from None
    expected = [f"w{i}" for i in range(len(model._layout.segments))]
    if sorted(arrays) != sorted(expected):
        raise _bad_file(path, "model", f"it stores the arrays {sorted(arrays)}; its configuration needs "
                                       f"{expected}")
    try:
        model.set_weights([arrays[name] for name in expected])
    except (TypeError, ValueError) as error:
        raise _bad_file(path, "model", f"its weights do not fit its configuration ({error})") from None
    return model


def save_checkpoint(trainer, path):
    model, opt = trainer.model, trainer.optimizer
    state = opt.state_dict()
    meta = {
        "format": "fusedense-checkpoint", "version": FORMAT_VERSION, "config": model.config(), "seed": model._seed,
        "optimizer": type(opt).__name__, "iterations": state["iterations"], "scalars": state["scalars"],
        "rng": trainer._rng.bit_generator.state,
    }
    arrays = {"params": model._k.to_host(model._params)}
    if model._layout.state_size:  # running statistics
        arrays["state"] = model._k.to_host(model._state)
    arrays.update({f"opt_{name}": a for name, a in state["arrays"].items()})
    _write(path, meta, arrays)


def load_checkpoint(trainer, path):
    """Restore a checkpoint into ``trainer`` (same architecture and optimizer), all or
    nothing: every value is checked before anything is written."""
    meta, arrays = _read(path, "checkpoint")
    model, opt = trainer.model, trainer.optimizer

    def bad(why):
        return _bad_file(path, "checkpoint", why)

    saved, current = _config(meta, path, "checkpoint"), model.config()
    saved.setdefault("normalization", [None] * (len(current["sizes"]) - 2))  # written before normalization
    for key in ("sizes", "activation", "dropout", "normalization", "dtype"):
        if key not in saved:
            raise bad(f"its configuration has no {key!r}")
        if saved[key] != current[key]:
            raise ValueError(f"checkpoint {key} {saved[key]!r} does not match the model's {current[key]!r}")
    if meta.get("optimizer") != type(opt).__name__:
        raise ValueError(f"checkpoint optimizer {meta.get('optimizer')} does not match the trainer's {type(opt).__name__}")
    state = opt.state_dict()
    expected = {"params": (model.num_parameters,), **{f"opt_{name}": a.shape for name, a in state["arrays"].items()}}
    if model._layout.state_size:
        expected["state"] = (model._layout.state_size,)
    if sorted(arrays) != sorted(expected):
        raise bad(f"it stores the arrays {sorted(arrays)}; a checkpoint of this trainer has {sorted(expected)}")
    for name, shape in expected.items():
        array = arrays[name]
        if array.dtype.kind not in "biuf":
            raise bad(f"its {name!r} has dtype {array.dtype}, not a real number type")
        if array.shape != shape:
            if name == "params":
                raise ValueError(f"checkpoint has {array.size} parameters; the model has {model.num_parameters}")
            raise bad(f"its {name!r} has shape {array.shape}; this trainer's has {shape}")
        try:
            check_finite(array, f"its {name!r}")
        except ValueError as error:
            raise bad(str(error)) from None
    _check_counters(meta, state, bad)
    try:  # on a scratch generator of the same kind, so that a bad state changes nothing
        getattr(np.random, type(trainer._rng.bit_generator).__name__)().state = meta["rng"]
    except (KeyError, TypeError, ValueError, OverflowError):
        raise bad("its shuffling RNG state is missing or not valid") from None
    opt.load_state_dict({"iterations": meta["iterations"], "scalars": meta["scalars"],
                         "arrays": {name[4:]: a for name, a in arrays.items() if name.startswith("opt_")}})
    model._k.copy_into(model._params, arrays["params"])
    if "state" in expected:
        model._k.copy_into(model._state, arrays["state"])
    model._seed = int(meta["seed"])
    trainer._rng.bit_generator.state = meta["rng"]


def _check_counters(meta, state, bad):
    """The step count, seed and the optimizer's scalar state: numbers of the right kind."""
    for name in ("iterations", "seed"):
        value = meta.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise bad(f"its {name!r} is {value!r}, not an integer in [0, 2**63)")
    scalars = meta.get("scalars")
    if not isinstance(scalars, dict) or set(scalars) != set(state["scalars"]):
        raise bad(f"its optimizer scalars are {scalars!r}; this optimizer has {sorted(state['scalars'])}")
    for name, value in scalars.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad(f"its optimizer scalar {name!r} is {value!r}, not a finite number")
