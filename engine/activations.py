"""Activation functions by name or as objects; the kernels do the arithmetic."""
from __future__ import annotations

from kernels import spec


class Activation:
    """A hidden-layer activation: a kernel code plus its scalar parameter."""

    code = spec.IDENTITY
    param = 0.0
    learnable = False

    @property
    def name(self):
        return _NAME_OF_CLASS[type(self)]

    def config(self):
        return {"name": self.name}

    def __repr__(self):
        return f"{type(self).__name__}()"


class Identity(Activation):
    code = spec.IDENTITY


class ReLU(Activation):
    code = spec.RELU


class LeakyReLU(Activation):
    """``x`` for x > 0 else ``negative_slope * x``."""

    code = spec.LEAKY_RELU

    def __init__(self, negative_slope=0.01):
        self.param = float(negative_slope)

    def config(self):
        return {"name": self.name, "negative_slope": self.param}

    def __repr__(self):
        return f"LeakyReLU({self.param})"


class ELU(Activation):
    """``x`` for x > 0 else ``alpha * (exp(x) - 1)``."""

    code = spec.ELU

    def __init__(self, alpha=1.0):
        self.param = float(alpha)

    def config(self):
        return {"name": self.name, "alpha": self.param}

    def __repr__(self):
        return f"ELU({self.param})"


class SELU(Activation):
    code = spec.SELU


class GELU(Activation):
    """Exact GELU, ``x * Phi(x)`` with the normal CDF through erf."""

    code = spec.GELU


class GELUTanh(Activation):
    """GELU's tanh approximation."""

    code = spec.GELU_TANH


class SiLU(Activation):
    code = spec.SILU


class Softplus(Activation):
    code = spec.SOFTPLUS


class Tanh(Activation):
    code = spec.TANH


class Sigmoid(Activation):
    code = spec.SIGMOID


class PReLU(Activation):
    """``x`` for x > 0 else ``a_j * x`` with a learnable slope ``a_j`` per unit."""

    code = spec.PRELU
    learnable = True

    def __init__(self, init=0.25):
        self.init = float(init)

    def config(self):
        return {"name": self.name, "init": self.init}

    def __repr__(self):
        return f"PReLU({self.init})"


_CLASSES = {
    "identity": Identity, "relu": ReLU, "leaky_relu": LeakyReLU, "elu": ELU, "selu": SELU,
    "gelu": GELU, "gelu_tanh": GELUTanh, "silu": SiLU, "softplus": Softplus, "tanh": Tanh,
    "sigmoid": Sigmoid, "prelu": PReLU,
}
_NAME_OF_CLASS = {cls: name for name, cls in _CLASSES.items()}
NAMES = tuple(_CLASSES)


def get(activation, argument="activation") -> Activation:
    """An Activation from a name, a config dict or an Activation object."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, dict):
        options = dict(activation)
        return get(options.pop("name"), argument).__class__(**options)
    if not isinstance(activation, str):
        raise TypeError(f"{argument} must be a name or an engine.activations.Activation; got {type(activation).__name__}")
    if activation not in _CLASSES:
        raise ValueError(f"{argument} must be one of {', '.join(NAMES)}; got {activation!r}")
    return _CLASSES[activation]()
