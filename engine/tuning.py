"""Hyperparameter search: random search with coarse-to-fine refinement, and grid search,
one process or on a Dask cluster.

``objective(config) -> float`` scores one configuration, a dict of hyperparameter values
(lower is better, e.g. a validation loss). A search returns its trials sorted best first
as :class:`Trial` records ``(config, score, seconds)``; :func:`table` prints them. NaN
scores (a diverged run) sort last; an error in ``objective`` ends the search with it.

    space = {"lr": loguniform(1e-4, 1e-1), "hidden": choice([64, 128, 256]), "dropout": uniform(0.0, 0.5)}
    trials = random_search(objective, space, n_trials=20, refine=2)
    print(table(trials[:5]))
"""
from __future__ import annotations

import itertools
import math
import numbers
import time
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from .validation import number

# refine: each round draws around the best _KEEP share of the trials so far, in ranges
# _SHRINK times as wide as the round before's (round r: _SHRINK ** r of the space's width).
_KEEP = 0.2
_SHRINK = 0.5


class Distribution:
    """A hyperparameter's distribution: ``sample(rng)`` draws a value with a NumPy Generator;
    ``around(value, fraction)`` is the narrower one a refinement round draws from."""

    def sample(self, rng):
        raise NotImplementedError

    def around(self, value, fraction):
        raise NotImplementedError


def _interval_around(centre, low, high, fraction):
    """The sub-interval of [low, high] ``fraction`` as wide, centred on ``centre`` where it
    fits and moved inside where it does not."""
    width = fraction * (high - low)
    start = min(max(centre - width / 2, low), high - width)
    return start, start + width


class Uniform(Distribution):
    """``uniform(a, b)``: ``a + (b - a) u`` with ``u ~ U[0, 1)``, on [a, b) (the bounds as
    NumPy's ``Generator.uniform(low, high)``, not scipy's ``loc, scale``)."""

    def __init__(self, a, b):
        self.a = number(a, "a", high=math.inf, high_open=True)
        self.b = number(b, "b", low=self.a, low_open=True, high=math.inf, high_open=True)

    def __repr__(self):
        return f"uniform({self.a!r}, {self.b!r})"

    def sample(self, rng):
        return self.a + (self.b - self.a) * float(rng.random())

    def around(self, value, fraction):
        return Uniform(*_interval_around(value, self.a, self.b, fraction))


class LogUniform(Distribution):
    """``loguniform(a, b)``: ``exp(uniform(log a, log b))``, ``0 < a < b``: every decade
    of [a, b) equally likely (scipy's ``loguniform(a, b)``), for rates and decays."""

    def __init__(self, a, b):
        self.a = number(a, "a", low=0.0, low_open=True, high=math.inf, high_open=True)
        self.b = number(b, "b", low=self.a, low_open=True, high=math.inf, high_open=True)

    def __repr__(self):
        return f"loguniform({self.a!r}, {self.b!r})"

    def sample(self, rng):
        low, high = math.log(self.a), math.log(self.b)
        return math.exp(low + (high - low) * float(rng.random()))

    def around(self, value, fraction):
        low, high = _interval_around(math.log(value), math.log(self.a), math.log(self.b), fraction)
        return LogUniform(math.exp(low), math.exp(high))


class RandInt(Distribution):
    """``randint(a, b)``: an int ``a <= k < b``, each equally likely (``b`` excluded, as in
    scipy's ``randint`` and NumPy's ``Generator.integers``)."""

    def __init__(self, a, b):
        self.a = number(a, "a", integer=True)
        self.b = number(b, "b", low=self.a, low_open=True, integer=True)

    def __repr__(self):
        return f"randint({self.a!r}, {self.b!r})"

    def sample(self, rng):
        return int(rng.integers(self.a, self.b))

    def around(self, value, fraction):
        # ``fraction`` of the b - a values (at least one), around ``value``
        width = max(1, round(fraction * (self.b - self.a)))
        start = min(max(value - width // 2, self.a), self.b - width)
        return RandInt(start, start + width)


class Choice(Distribution):
    """``choice(options)``: one of ``options`` (a non-empty list or tuple), with
    probabilities ``p`` (default all equal), as NumPy's ``Generator.choice``."""

    def __init__(self, options, p=None):
        if isinstance(options, (str, bytes)) or not isinstance(options, (list, tuple)):
            raise TypeError(f"options must be a list or tuple of values; got {type(options).__name__}")
        if not options:
            raise ValueError("options must hold at least one value; got an empty list")
        self.options = list(options)
        if p is None:
            p = np.full(len(options), 1.0 / len(options))
        else:
            p = np.asarray(p, dtype=np.float64)
            if p.shape != (len(options),) or not np.all(np.isfinite(p)) or np.any(p < 0) \
                    or not math.isclose(p.sum(), 1.0, rel_tol=1e-9):
                raise ValueError(f"p must hold {len(options)} probabilities >= 0 adding up to 1, one per option; "
                                 f"got {p.tolist()!r}")
        self.p = p

    def __repr__(self):
        return f"choice({self.options!r})"

    def sample(self, rng):
        return self.options[int(rng.choice(len(self.options), p=self.p))]

    def around(self, value, fraction):
        # ``value`` kept with probability 1 - fraction, else any option drawn as before
        stay = np.array([option is value or option == value for option in self.options], dtype=np.float64)
        return Choice(self.options, p=fraction * self.p + (1.0 - fraction) * stay / stay.sum())


uniform, loguniform, randint, choice = Uniform, LogUniform, RandInt, Choice


class Trial(NamedTuple):
    """One evaluated configuration: ``config`` (a dict), its ``score`` (lower is better) and
    the ``seconds`` ``objective`` took on it."""

    config: dict
    score: float
    seconds: float


def _timed(config, objective):
    """(objective(config), seconds it took): one task, where the search runs it."""
    began = time.perf_counter()
    score = objective(config)
    return score, time.perf_counter() - began


def _evaluate(objective, configs, client):
    """A Trial per config, in order: one by one, or one Dask task each on ``client``."""
    if client is None:
        results = [_timed(config, objective) for config in configs]
    else:
        results = client.gather(client.map(_timed, configs, objective=objective, pure=False))
    trials = []
    for config, (score, seconds) in zip(configs, results):
        if isinstance(score, np.ndarray) and score.shape == ():
            score = score[()]
        if isinstance(score, bool) or not isinstance(score, numbers.Real):
            raise TypeError(f"objective must return a number (lower is better); for {config!r} it returned "
                            f"{type(score).__name__}")
        trials.append(Trial(config, float(score), seconds))
    return trials


def _ranked(trials):
    """Best first: lowest score, NaN last, ties in the order they were run."""
    return sorted(trials, key=lambda t: (math.isnan(t.score), t.score))


def check_client(client):
    """TypeError unless ``client`` is None or has a Dask client's ``map`` and ``gather``."""
    if client is not None and not (callable(getattr(client, "map", None))
                                   and callable(getattr(client, "gather", None))):
        raise TypeError(f"client must be a dask.distributed.Client (with map and gather) or None; "
                        f"got {type(client).__name__}")


def _check_common(objective, client):
    if not callable(objective):
        raise TypeError(f"objective must be a function of a config dict returning a score; "
                        f"got {type(objective).__name__}")
    check_client(client)


def _check_names(mapping, argument, what):
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{argument} must be a dict mapping hyperparameter names to {what}; "
                        f"got {type(mapping).__name__}")
    if not mapping:
        raise ValueError(f"{argument} must name at least one hyperparameter; got an empty dict")
    for name in mapping:
        if not isinstance(name, str):
            raise TypeError(f"{argument}'s keys must be hyperparameter names (str); got {name!r}")


def random_search(objective, space, n_trials=20, seed=0, refine=0, client=None):
    """Random search: ``n_trials`` configurations drawn from ``space`` (a dict of name ->
    ``uniform``, ``loguniform``, ``randint`` or ``choice``), each scored by ``objective``,
    then ``refine`` coarse-to-fine rounds of ``n_trials`` more: ``n_trials (1 + refine)``
    trials in all. Returns them sorted best first.

    Round ``r`` (1 to ``refine``) draws each configuration around one of the best
    ``k = ceil(0.2 n_trials)`` trials so far (taken in turn, best first), each
    hyperparameter from a range ``w = 0.5^r`` as wide as its distribution's: for
    ``uniform`` an interval ``w (b - a)`` wide centred on the best value (moved inside
    [a, b) where it would stick out), for ``loguniform`` the same on ``log``, for
    ``randint`` ``max(1, round(w (b - a)))`` consecutive ints; ``choice`` keeps the best
    value with probability ``1 - w`` and otherwise draws any option. A round's
    configurations are all drawn before any is run, from one NumPy Generator seeded with
    ``seed``, so that the trials are the same one by one or on ``client`` (a Dask
    ``distributed.Client``: one task per trial, each round gathered before the next).
    """
    _check_common(objective, client)
    _check_names(space, "space", "distributions")
    for name, distribution in space.items():
        if not isinstance(distribution, Distribution):
            raise TypeError(f"space[{name!r}] must be engine.tuning.uniform, loguniform, randint or choice "
                            f"(choice([...]) for a list of values); got {type(distribution).__name__}")
    n_trials = number(n_trials, "n_trials", low=1, integer=True)
    refine = number(refine, "refine", low=0, integer=True)
    if seed is not None:
        seed = number(seed, "seed", low=0, integer=True)
    rng = np.random.default_rng(seed)
    configs = [{name: d.sample(rng) for name, d in space.items()} for _ in range(n_trials)]
    trials = _evaluate(objective, configs, client)
    keep = math.ceil(_KEEP * n_trials)
    for r in range(1, refine + 1):
        best, fraction = _ranked(trials)[:keep], _SHRINK**r
        configs = [{name: d.around(best[i % keep].config[name], fraction).sample(rng) for name, d in space.items()}
                   for i in range(n_trials)]
        trials += _evaluate(objective, configs, client)
    return _ranked(trials)


def grid_search(objective, grid, client=None):
    """Every combination of ``grid``'s values (a dict of name -> a non-empty list, tuple,
    range or 1-D array of values), the last name varying fastest, each scored by
    ``objective``; returns the trials sorted best first. ``client`` as in
    :func:`random_search`."""
    _check_common(objective, client)
    _check_names(grid, "grid", "lists of values")
    values = []
    for name, options in grid.items():
        if isinstance(options, np.ndarray) and options.ndim == 1:
            options = options.tolist()
        if isinstance(options, (str, bytes)) or not isinstance(options, (list, tuple, range)):
            raise TypeError(f"grid[{name!r}] must be a list of values; got {type(options).__name__}")
        if len(options) == 0:
            raise ValueError(f"grid[{name!r}] must hold at least one value; got an empty list")
        values.append(list(options))
    configs = [dict(zip(grid, combination)) for combination in itertools.product(*values)]
    return _ranked(_evaluate(objective, configs, client))


def _cell(value):
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        return f"{value:.4g}"
    return str(value)


def table(trials):
    """The trials as a text table, one row each in the order given (a search's: best
    first): rank, score, seconds, then one column per hyperparameter."""
    trials = list(trials)
    for i, t in enumerate(trials):
        if not isinstance(t, Trial):
            raise TypeError(f"trials[{i}] must be an engine.tuning.Trial; got {type(t).__name__}")
    names = list(dict.fromkeys(name for t in trials for name in t.config))
    header = ["rank", "score", "seconds", *names]
    rows = [[str(i + 1), _cell(t.score), f"{t.seconds:.3g}", *(_cell(t.config.get(n, "")) for n in names)]
            for i, t in enumerate(trials)]
    widths = [max(len(row[j]) for row in [header, *rows]) for j in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *rows])
