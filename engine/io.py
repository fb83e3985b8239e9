"""Saving models and checkpoints as .npz files (config and state as JSON, arrays as arrays)."""
from __future__ import annotations

import json

import numpy as np

from .model import MLP


def _write(path, meta, arrays):
    # Through a file object, so np.savez writes to ``path`` exactly (no ".npz" appended).
    with open(path, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


def _read(path):
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data["meta"])), {name: data[name] for name in data.files if name != "meta"}


def save_model(model, path):
    _write(path, {"format": "fusedense-model", "version": 1, "config": model.config()},
           {f"w{i}": w for i, w in enumerate(model.get_weights())})


def load_model(path, backend=None):
    """The MLP saved at ``path`` by ``model.save`` (on ``backend``, default the current one)."""
    meta, arrays = _read(path)
    if meta.get("format") != "fusedense-model":
        raise ValueError(f"{path} is not a fusedense model file (format {meta.get('format')!r})")
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
    meta, arrays = _read(path)
    model, opt = trainer.model, trainer.optimizer
    if meta.get("format") != "fusedense-checkpoint":
        raise ValueError(f"{path} is not a fusedense checkpoint (format {meta.get('format')!r})")
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
