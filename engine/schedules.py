"""Learning-rate schedules: callables of the 0-based index of the update about to be made."""
from __future__ import annotations

import math
import numbers

from .validation import number


class Schedule:
    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class Constant(Schedule):
    """``lr`` at every step."""

    def __init__(self, lr):
        self.lr = number(lr, "lr", low=0.0)

    def __call__(self, step):
        return self.lr


class StepDecay(Schedule):
    """``lr * gamma ** (step // step_size)`` (torch StepLR, counted in updates)."""

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = number(lr, "lr", low=0.0)
        self.step_size = number(step_size, "step_size", low=1, integer=True)
        self.gamma = number(gamma, "gamma", low=0.0)

    def __call__(self, step):
        return self.lr * self.gamma ** (step // self.step_size)


class ExponentialDecay(Schedule):
    """``lr * gamma ** step``."""

    def __init__(self, lr, gamma):
        self.lr = number(lr, "lr", low=0.0)
        self.gamma = number(gamma, "gamma", low=0.0)

    def __call__(self, step):
        return self.lr * self.gamma**step


class CosineDecay(Schedule):
    """``min_lr + (lr - min_lr) (1 + cos(pi min(step, total_steps) / total_steps)) / 2``,
    after ``warmup_steps`` updates of linear warm-up from 0 to ``lr``."""

    def __init__(self, lr, total_steps, min_lr=0.0, warmup_steps=0):
        self.lr = number(lr, "lr", low=0.0)
        self.total_steps = number(total_steps, "total_steps", low=1, integer=True)
        self.min_lr = number(min_lr, "min_lr", low=0.0)
        self.warmup_steps = number(warmup_steps, "warmup_steps", low=0, integer=True)

    def __call__(self, step):
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        t = min(step - self.warmup_steps, self.total_steps) / self.total_steps
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


class Triangular(Schedule):
    """Smith's (2017) triangular cyclical learning rate, counted in updates:

    ``cycle = floor(1 + step / (2 half_cycle))``, ``x = |step / half_cycle - 2 cycle + 1|``,
    ``lr = min_lr + (max_lr - min_lr) max(0, 1 - x)``.

    Update 0 uses ``min_lr``, update ``half_cycle`` ``max_lr``, update ``2 half_cycle``
    ``min_lr`` again, linearly in between, forever (torch ``CyclicLR(base_lr=min_lr,
    max_lr=max_lr, step_size_up=half_cycle, mode="triangular")``).
    """

    def __init__(self, min_lr, max_lr, half_cycle):
        self.min_lr = number(min_lr, "min_lr", low=0.0)
        self.max_lr = number(max_lr, "max_lr", low=self.min_lr)
        self.half_cycle = number(half_cycle, "half_cycle", low=1, integer=True)

    def __call__(self, step):
        cycle = math.floor(1 + step / (2 * self.half_cycle))
        x = abs(step / self.half_cycle - 2 * cycle + 1)
        return self.min_lr + (self.max_lr - self.min_lr) * max(0.0, 1.0 - x)


def _check_schedule(schedule, argument):
    """A schedule from a callable (kept) or a number (``Constant``)."""
    if callable(schedule):
        return schedule
    if isinstance(schedule, bool) or not isinstance(schedule, numbers.Real):
        raise TypeError(f"{argument} must be a schedule (a callable of the update index) or a number; "
                        f"got {type(schedule).__name__}")
    return Constant(schedule)


class Warmup(Schedule):
    """Linear warm-up for ``steps`` updates in front of ``schedule``, which then starts at
    its own update 0 (the convention of ``CosineDecay``'s ``warmup_steps``):

    ``lr = schedule(0) (step + 1) / steps`` for ``step < steps``, else
    ``schedule(step - steps)``.

    So update 0 uses ``schedule(0) / steps`` and update ``steps - 1`` the full
    ``schedule(0)``; ``Warmup(CosineDecay(lr, T), w)`` equals
    ``CosineDecay(lr, T, warmup_steps=w)``. ``schedule`` is any schedule or callable of the
    update index, or a number (a constant rate).
    """

    def __init__(self, schedule, steps):
        self.schedule = _check_schedule(schedule, "schedule")
        self.steps = number(steps, "steps", low=0, integer=True)

    def __call__(self, step):
        if step < self.steps:
            return self.schedule(0) * (step + 1) / self.steps
        return self.schedule(step - self.steps)


class Scaled(Schedule):
    """``scale * schedule(step)``: how :class:`engine.ReduceLROnPlateau` lowers a schedule
    (a float rate it lowers directly). ``schedule`` as in :class:`Warmup`."""

    def __init__(self, schedule, scale):
        self.schedule = _check_schedule(schedule, "schedule")
        self.scale = number(scale, "scale", low=0.0)

    def __call__(self, step):
        return self.scale * self.schedule(step)
