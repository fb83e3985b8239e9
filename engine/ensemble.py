"""Ensembles of MLPs: averaged predictions, and members trained one after another.

An ensemble's prediction is the mean of its members' ``predict``: averaged probabilities
for softmax or sigmoid outputs (the ensembling of the lectures), averaged values for
``output="none"``. Members differ by their seeds (initialisation, dropout masks and the
order ``fit`` shuffles in) and, with bagging, by the rows they train on.
"""
from __future__ import annotations

import copy

import numpy as np

from . import metrics as metrics_module
from .model import MLP
from .trainer import Trainer
from .tuning import check_client
from .validation import as_numeric_array, number


def _log_mean_exp(a):
    """``log(mean_m exp(a[m]))`` over the first axis of a float64 array, without overflow."""
    top = a.max(axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):  # log(0) = -inf: a probability that underflowed
        return top + np.log(np.exp(a - top).mean(axis=0))


class Ensemble:
    """Members of the same inputs, outputs and output function, predicting together.

    ``models``: a non-empty list of :class:`engine.MLP` with equal ``sizes[0]`` and
    ``sizes[-1]`` and the same ``output``; they may differ in hidden layers, dtype and
    backend. The arithmetic of the ensemble is on the host, in float64, on the members'
    host predictions; results come back in the members' dtype (the wider one if they
    differ).
    """

    def __init__(self, models):
        if isinstance(models, MLP) or not isinstance(models, (list, tuple)):
            raise TypeError(f"models must be a list of engine.MLP; got {type(models).__name__}")
        if not models:
            raise ValueError("models must hold at least one engine.MLP; got an empty list")
        for i, model in enumerate(models):
            if not isinstance(model, MLP):
                raise TypeError(f"models[{i}] must be an engine.MLP; got {type(model).__name__}")
        first = models[0]
        for i, model in enumerate(models[1:], 1):
            if (model.sizes[0], model.sizes[-1], model.output) != (first.sizes[0], first.sizes[-1], first.output):
                raise ValueError(f"models[{i}] has {model.sizes[0]} inputs, {model.sizes[-1]} outputs and output "
                                 f"{model.output!r}; models[0] has {first.sizes[0]}, {first.sizes[-1]} and "
                                 f"{first.output!r}: every member must have the same")
        self.models = list(models)
        self.output = first.output
        self.dtype = np.result_type(*(m.dtype for m in self.models))

    def __len__(self):
        return len(self.models)

    def __iter__(self):
        return iter(self.models)

    def __getitem__(self, index):
        return self.models[index]

    def __repr__(self):
        return f"Ensemble({len(self.models)} members, sizes={self.models[0].sizes}, output={self.output!r})"

    def predict(self, X, batch_size=None):
        """``mean_m predict_m(X)``: the members' outputs (output function applied), averaged.
        A host array (N, n_out)."""
        outputs = np.stack([m.predict(X, batch_size) for m in self.models]).astype(np.float64)
        return outputs.mean(axis=0).astype(self.dtype)

    def logits(self, X, batch_size=None):
        """Scores whose output function is :meth:`predict`'s, for metrics and losses on logits.

        With ``l_m`` member m's logits and M members: softmax output,
        ``log(mean_m softmax(l_m))`` (so ``softmax(logits) = predict``); sigmoid output,
        ``log(q) - log(1 - q)`` with ``q = mean_m sigmoid(l_m)``; no output function,
        ``mean_m l_m``. Each is computed from the members' logits in log space, so a
        confident member's probability that underflows in float32 still counts. Not the
        mean of the logits, but for ``output="none"``.
        """
        logits = np.stack([m.logits(X, batch_size) for m in self.models]).astype(np.float64)
        if self.output == "none":
            result = logits.mean(axis=0)
        elif self.output == "softmax":
            log_p = logits - logits.max(axis=2, keepdims=True)
            log_p -= np.log(np.exp(log_p).sum(axis=2, keepdims=True))
            result = _log_mean_exp(log_p)
        else:  # sigmoid: log sigmoid(l) = -log(1 + exp(-l)), log(1 - sigmoid(l)) = -log(1 + exp(l))
            result = _log_mean_exp(-np.logaddexp(0.0, -logits)) - _log_mean_exp(-np.logaddexp(0.0, logits))
        return result.astype(self.dtype)

    def evaluate(self, X, y, metrics=("accuracy",), batch_size=None):
        """``{name: value}`` of ``metrics`` (names or engine.metrics objects, as a Trainer
        takes them; objects are copied, never updated) on the ensemble's :meth:`logits`."""
        if isinstance(metrics, (str, metrics_module.Metric)):
            metrics = (metrics,)
        metrics = [copy.deepcopy(metrics_module.get(m)) for m in metrics]
        scores = self.logits(X, batch_size)
        result = {}
        for m in metrics:
            m.reset()
            m.update(y, scores)
            result[m.name] = m.compute()
        return result


def bootstrap_rows(n_rows, seed, member):
    """The rows member ``member`` of a bagged ensemble trains on: ``n_rows`` indices drawn
    uniformly with replacement from ``range(n_rows)`` by ``np.random.default_rng((seed,
    member))``, so each member's sample depends on (seed, member) alone."""
    n_rows = number(n_rows, "n_rows", low=1, integer=True)
    return np.random.default_rng((seed, member)).integers(0, n_rows, n_rows)


def _train_member(i, make_trainer, X, y, bagging, seed, fit_kwargs, earlier=()):
    """(model, history) of member ``i``: ``make_trainer(i)`` checked (its model none of the
    ``earlier`` members'), then fitted (on its bootstrap sample with ``bagging``). The
    history comes back without its trainer, so that it can travel from a Dask worker."""
    trainer = make_trainer(i)
    if not isinstance(trainer, Trainer):
        raise TypeError(f"make_trainer({i}) must return an engine.Trainer; got {type(trainer).__name__}")
    model = trainer.model
    if any(model is m for m in earlier):
        raise ValueError(f"make_trainer({i}) returned the model of an earlier member; it must build a new one")
    if trainer.step:
        raise ValueError(f"make_trainer({i}) must return a fresh Trainer; this one has made {trainer.step} updates")
    if model.seed != seed + i:
        raise ValueError(f"make_trainer({i}) must seed its model with seed + i = {seed + i} "
                         f"(engine.MLP(..., seed=seed + i)); its model has seed {model.seed}")
    if bagging:
        rows = bootstrap_rows(X.shape[0], seed, i)
        history = trainer.fit(X[rows], y[rows], **fit_kwargs)
    else:
        history = trainer.fit(X, y, **fit_kwargs)
    history.trainer = None
    return model, history


def train_ensemble(make_trainer, X, y, n_members=5, bagging=False, seed=0, client=None, **fit_kwargs):
    """Train ``n_members`` models one after another; returns ``(Ensemble, histories)``,
    ``histories[i]`` what member i's ``fit`` returned.

    ``make_trainer(i)`` returns a fresh :class:`engine.Trainer` (no update made yet) for
    member i = 0, 1, ..., whose model was built with ``seed=seed + i`` (the ``seed`` given
    here): that seed fixes the member's initialisation, dropout masks and shuffling, so
    the ensemble is reproducible and its members differ. A model of another seed, or one
    returned twice, is a ValueError. Each member runs ``trainer.fit(X, y, **fit_kwargs)``;
    with ``bagging=True`` on the rows :func:`bootstrap_rows` draws for it instead (a
    sample of ``len(X)`` rows with replacement), so ``validation_split``, which would
    validate on rows the sample may also hold, is refused then: pass ``validation_data``.

    ``client``: None to train here, one member after another, or a
    ``dask.distributed.Client`` to train one member per task on its workers (the
    ``dask`` extra); ``make_trainer`` and the data then travel to the workers, the trained
    models come back (pickled as configuration and weights, on the backend they were
    built for), and the ensemble is the one trained here (to the last bit where the
    workers use as many threads: Dask's worker processes use one by default).
    """
    if not callable(make_trainer):
        raise TypeError(f"make_trainer must be a callable make_trainer(i) -> engine.Trainer; "
                        f"got {type(make_trainer).__name__}")
    n_members = number(n_members, "n_members", low=1, integer=True)
    if not isinstance(bagging, bool):
        raise TypeError(f"bagging must be True or False; got {type(bagging).__name__}")
    seed = number(seed, "seed", low=0, integer=True)
    if bagging:
        if fit_kwargs.get("validation_split", 0.0):
            raise ValueError("validation_split cannot be used with bagging=True: it would validate on rows the "
                             "bootstrap sample also trains on; pass validation_data instead")
        X, y = as_numeric_array(X, "X"), as_numeric_array(y, "y")
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty 2-D array (n_samples, n_features); got shape {X.shape}")
        if y.ndim == 0 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have one row per row of X ({X.shape[0]}); got shape {y.shape}")
    check_client(client)
    arguments = dict(make_trainer=make_trainer, X=X, y=y, bagging=bagging, seed=seed, fit_kwargs=fit_kwargs)
    if client is None:
        members = []
        for i in range(n_members):
            members.append(_train_member(i, **arguments, earlier=[model for model, _ in members]))
    else:
        members = client.gather(client.map(_train_member, range(n_members), **arguments, pure=False))
    return Ensemble([model for model, _ in members]), [history for _, history in members]
