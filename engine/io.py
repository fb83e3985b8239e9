"""Saving models and checkpoints as .npz files (config and state as JSON, arrays as arrays).

A file is written under a temporary name and renamed into place, so its path holds the
old file or the new one, never a partial one. Reading never unpickles: a file this
module did not write is a ValueError naming it.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import zipfile

import numpy as np

from .model import MLP


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


def _read(path, kind):
    """(meta, arrays) of a file ``_write`` wrote as a fusedense ``kind`` ("model" or
    "checkpoint"); anything else is a ValueError naming ``path``."""
    def foreign(why):
        return ValueError(f"{os.fspath(path)} is not a fusedense {kind} file: {why}")

    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile):
        # NumPy's own message for a file it cannot parse suggests allow_pickle=True, which a
        # model file never needs: from None keeps it out of the traceback.
        raise foreign("it is not an .npz archive") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise foreign("it holds a single array (.npy), not an .npz archive")
    with data:
        if "meta" not in data.files:
            raise foreign(f"its archive has no 'meta' entry (entries: {', '.join(data.files) or 'none'})")
        try:
            meta = json.loads(str(data["meta"]))
            arrays = {name: data[name] for name in data.files if name != "meta"}
        except (ValueError, zipfile.BadZipFile):
            raise foreign("its 'meta' entry is not JSON or an entry cannot be read without unpickling") from None
    if not isinstance(meta, dict) or meta.get("format") != f"fusedense-{kind}":
        found = meta.get("format") if isinstance(meta, dict) else None
        raise foreign(f"its format is {found!r}, not 'fusedense-{kind}'")
    return meta, arrays


def save_model(model, path):
    _write(path, {"format": "fusedense-model", "version": 1, "config": model.config()},
           {f"w{i}": w for i, w in enumerate(model.get_weights())})


def load_model(path, backend=None):
    """The MLP saved at ``path`` by ``model.save`` (on ``backend``, default the current one)."""
    meta, arrays = _read(path, "model")
    model = MLP(backend=backend, **meta["config"])
    model.set_weights([arrays[f"w{i}"] for i in range(len(arrays))])
    return model


def save_checkpoint(trainer, path):
    model, opt = trainer.model, trainer.optimizer
    state = opt.state_dict()
    meta = {
        "format": "fusedense-checkpoint", "version": 1, "config": model.config(), "seed": model._seed,
        "optimizer": type(opt).__name__, "iterations": state["iterations"], "scalars": state["scalars"],
        "rng": trainer._rng.bit_generator.state,
    }
    arrays = {"params": model._k.to_host(model._params)}
    arrays.update({f"opt_{name}": a for name, a in state["arrays"].items()})
    _write(path, meta, arrays)


def load_checkpoint(trainer, path):
    """Restore a checkpoint into ``trainer`` (same architecture and optimizer), all or nothing."""
    meta, arrays = _read(path, "checkpoint")
    model, opt = trainer.model, trainer.optimizer
    saved, current = meta["config"], model.config()
    for key in ("sizes", "activation", "dropout", "dtype"):
        if saved[key] != current[key]:
            raise ValueError(f"checkpoint {key} {saved[key]!r} does not match the model's {current[key]!r}")
    if meta["optimizer"] != type(opt).__name__:
        raise ValueError(f"checkpoint optimizer {meta['optimizer']} does not match the trainer's {type(opt).__name__}")
    if arrays["params"].shape != (model.num_parameters,):
        raise ValueError(f"checkpoint has {arrays['params'].size} parameters; the model has {model.num_parameters}")
    opt.load_state_dict({"iterations": meta["iterations"], "scalars": meta["scalars"],
                         "arrays": {name[4:]: a for name, a in arrays.items() if name.startswith("opt_")}})
    model._k.copy_into(model._params, arrays["params"])
    model._seed = int(meta["seed"])
    trainer._rng.bit_generator.state = meta["rng"]
