"""Exceptions of the public API."""


class BackendUnavailable(RuntimeError):
    """A backend was asked for that cannot run on this machine; the message says why."""


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN or Inf during training (the weights are left as they were)."""
