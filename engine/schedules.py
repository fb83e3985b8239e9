"""Learning-rate schedules: callables of the 0-based index of the update about to be made."""
from __future__ import annotations

import math

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
