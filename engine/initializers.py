"""Weight initializers: draw on the host from a seeded NumPy generator.

For a weight of shape (fan_in, fan_out)::

    uniform         U[-1/sqrt(fan_in), 1/sqrt(fan_in)]       (torch's Linear default)
    glorot_uniform  U[-sqrt(6/(fan_in+fan_out)), +...]        (Glorot & Bengio, 2010)
    glorot_normal   N(0, 2/(fan_in+fan_out))
    he_uniform      U[-sqrt(6/fan_in), +sqrt(6/fan_in)]       (He et al., 2015)
    he_normal       N(0, 2/fan_in)
    lecun_normal    N(0, 1/fan_in)                            (for selu)
    zeros

A bias of shape (fan_out,) uses its layer's fan_in and fan_out.
"""
import math

import numpy as np


def _uniform(limit):
    return lambda rng, shape: rng.uniform(-limit, limit, size=shape)


def _normal(std):
    return lambda rng, shape: rng.normal(0.0, std, size=shape)


_DRAWS = {
    "zeros": lambda fan_in, fan_out: lambda rng, shape: np.zeros(shape),
    "uniform": lambda fan_in, fan_out: _uniform(1.0 / math.sqrt(fan_in)),
    "glorot_uniform": lambda fan_in, fan_out: _uniform(math.sqrt(6.0 / (fan_in + fan_out))),
    "glorot_normal": lambda fan_in, fan_out: _normal(math.sqrt(2.0 / (fan_in + fan_out))),
    "he_uniform": lambda fan_in, fan_out: _uniform(math.sqrt(6.0 / fan_in)),
    "he_normal": lambda fan_in, fan_out: _normal(math.sqrt(2.0 / fan_in)),
    "lecun_normal": lambda fan_in, fan_out: _normal(math.sqrt(1.0 / fan_in)),
}
NAMES = tuple(_DRAWS)


def check(name, argument):
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be an initializer name; got {type(name).__name__}")
    if name not in _DRAWS:
        raise ValueError(f"{argument} must be one of {', '.join(NAMES)}; got {name!r}")
    return name


def draw(name, rng, shape, fan_in, fan_out):
    """Values for a parameter of ``shape`` in a layer of (fan_in, fan_out), as float64."""
    return _DRAWS[name](fan_in, fan_out)(rng, shape)
