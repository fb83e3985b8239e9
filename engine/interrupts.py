"""Ctrl-C at step boundaries.

A training step is several host calls (forward, backward, the guard, the optimizer's
kernels, then the step count): a KeyboardInterrupt between two of them would leave
weights updated but not counted, or optimizer state half-written. :class:`HeldInterrupt`
holds SIGINT and raises the KeyboardInterrupt at the next step boundary, so that an
interrupted ``fit`` or ``train_step`` leaves the model, the optimizer state and the step
count agreeing, and a checkpoint saved right after resumes exactly: ``fit`` holds it for
the whole run and checks after each step (setting a signal handler costs microseconds,
too much per step of a small model), ``train_step`` (:func:`whole_step`) for its one step.
"""
from __future__ import annotations

import functools
import signal
import threading


class HeldInterrupt:
    """While active, SIGINT is recorded instead of raising; :meth:`check` (at a step
    boundary) or the exit raises a recorded one."""

    __slots__ = ("received", "previous")

    def __init__(self):
        self.received = False
        self.previous = None

    def _record(self, signum, frame):
        self.received = True

    def __enter__(self):
        # Only Python's own Ctrl-C handler is replaced: a handler the user installed is
        # theirs to keep, and another thread cannot set handlers. An outer whole_step
        # leaves its own handler in place, so nesting holds once.
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._record)
        return self

    def check(self):
        """Raise the KeyboardInterrupt of a Ctrl-C received since the last check."""
        if self.received:
            self.received = False
            raise KeyboardInterrupt

    def __exit__(self, error_type, error, traceback):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            if self.received and error_type is None:
                raise KeyboardInterrupt


def whole_step(method):
    """Decorate a method that makes one step: a Ctrl-C during it raises when it returns."""
    @functools.wraps(method)
    def held(*args, **kwargs):
        with HeldInterrupt():
            return method(*args, **kwargs)
    return held
