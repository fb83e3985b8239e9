"""Greedy supervised layer-wise pretraining (the lecture's), on freeze and copy_layers_from.

Transfer learning itself is two methods of :class:`engine.MLP`: ``copy_layers_from``
(reuse another model's first layers) and ``freeze`` / ``unfreeze`` (train only the others).
"""
from __future__ import annotations

import copy

from . import optim
from .model import MLP
from .trainer import Trainer
from .validation import number


def _stage_epochs(epochs_per_layer, stages):
    """One epoch count per stage from an int or a list of ``stages`` ints."""
    if isinstance(epochs_per_layer, (list, tuple)):
        if len(epochs_per_layer) != stages:
            raise ValueError(f"epochs_per_layer must have one entry per stage ({stages}: one per hidden layer); "
                             f"got {len(epochs_per_layer)}")
        return [number(e, f"epochs_per_layer[{i}]", low=0, integer=True) for i, e in enumerate(epochs_per_layer)]
    return [number(epochs_per_layer, "epochs_per_layer", low=0, integer=True)] * stages


def _first(value, n):
    """A per-hidden-layer argument for a model of the first ``n`` hidden layers."""
    return list(value[:n]) if isinstance(value, (list, tuple)) else value


def pretrain_layerwise(sizes, X, y, epochs_per_layer, *, model_kwargs=None, fit_kwargs=None, freeze_previous=True,
                       **trainer_kwargs):
    """Greedy supervised layer-wise pretraining; returns the :class:`engine.MLP` of ``sizes``.

    With ``sizes = [n_in, h_1, ..., h_k, n_out]``, stage s = 1, ..., k trains the MLP
    ``[n_in, h_1, ..., h_s, n_out]`` on (X, y) for ``epochs_per_layer`` epochs (an int, or
    a list of one per stage): its first s - 1 layers copied from the previous stage's
    model (``copy_layers_from``) and, with ``freeze_previous``, frozen, so that the stage
    trains its new hidden layer and a new output layer; the last stage's model is
    returned with every layer trainable, ready to fine-tune. Without hidden layers
    (``[n_in, n_out]``) there is one stage, plain training.

    ``model_kwargs``: the other arguments of :class:`engine.MLP` (``activation`` and
    ``dropout`` may be lists of one per hidden layer, each stage taking its first ones);
    ``fit_kwargs``: those of ``Trainer.fit`` but ``epochs``; ``trainer_kwargs``: those of
    :class:`engine.Trainer` (an optimizer object is copied for each stage, so it must not
    be bound to a model yet).
    """
    sizes = MLP._check_sizes(sizes)
    stages = max(len(sizes) - 2, 1)
    epochs = _stage_epochs(epochs_per_layer, stages)
    model_kwargs = {} if model_kwargs is None else model_kwargs
    fit_kwargs = {} if fit_kwargs is None else fit_kwargs
    for name, value in (("model_kwargs", model_kwargs), ("fit_kwargs", fit_kwargs)):
        if not isinstance(value, dict):
            raise TypeError(f"{name} must be a dict of keyword arguments; got {type(value).__name__}")
    for name in ("activation", "dropout"):
        value = model_kwargs.get(name)
        if isinstance(value, (list, tuple)) and len(value) != len(sizes) - 2:
            raise ValueError(f"model_kwargs[{name!r}] must have one entry per hidden layer ({len(sizes) - 2}); "
                             f"got {len(value)}")
    if not isinstance(freeze_previous, bool):
        raise TypeError(f"freeze_previous must be True or False; got {type(freeze_previous).__name__}")
    optimizer = trainer_kwargs.pop("optimizer", None)
    if isinstance(optimizer, optim.Optimizer) and optimizer._model is not None:
        raise ValueError("optimizer is already bound to a model; pass a new optimizer object (or a name), which "
                         "pretrain_layerwise copies for each stage")
    previous = None
    for stage in range(1, stages + 1):
        stage_sizes = sizes if stage == stages else sizes[:stage + 1] + sizes[-1:]
        per_hidden = {name: _first(model_kwargs[name], stage) for name in ("activation", "dropout")
                      if name in model_kwargs}
        model = MLP(stage_sizes, **{**model_kwargs, **per_hidden})
        if previous is not None:
            model.copy_layers_from(previous, stage - 1)
            if freeze_previous:
                model.freeze(stage - 1)
        trainer = Trainer(model, optimizer=copy.deepcopy(optimizer), **trainer_kwargs)
        trainer.fit(X, y, epochs=epochs[stage - 1], **fit_kwargs)
        previous = model
    previous.unfreeze()
    return previous
