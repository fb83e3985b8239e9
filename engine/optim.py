"""Optimizers with torch.optim's names, defaults and formulas, over flat buffers.

Each optimizer owns its state as flat arrays the length of the model's parameter buffer,
and one update is one fused kernel call over the whole model (see kernels.spec for the
formulas). ``lr`` is a float or a schedule: any callable of the 0-based update index.
``weight_decay`` is coupled L2 (``g += wd * p``) for all but AdamW and SGDW, which decay
decoupled (``p *= 1 - lr * wd``); ``decay_bias=False`` exempts biases and other 1-D
parameters from it.

An L1 penalty applied after the step (the trainer's ``l1_update="clipped"`` or
``"proximal"``) is set by :meth:`Optimizer.set_l1`; every update then passes it to the
kernel (kernels.spec: ``seg_l1`` and ``l1_rule``).
"""
from __future__ import annotations

import math

import numpy as np

from kernels import spec

from .validation import number


def _check_lr(lr):
    if callable(lr):
        return lr
    return number(lr, "lr", low=0.0)


def _check_betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2); got {betas!r}")
    return tuple(number(b, f"betas[{i}]", low=0.0, high=1.0, high_open=True) for i, b in enumerate(betas))


class Optimizer:
    """Base class: state allocation, learning-rate schedules, decay masks, checkpoints."""

    state_names: tuple = ()

    def __init__(self, lr, weight_decay=0.0, decay_bias=True):
        self.lr = _check_lr(lr)
        self.last_lr = None  # the rate of the last update applied (what fit logs as "lr")
        self.weight_decay = number(weight_decay, "weight_decay", low=0.0)
        if not isinstance(decay_bias, bool):
            raise TypeError(f"decay_bias must be True or False; got {type(decay_bias).__name__}")
        self.decay_bias = decay_bias
        self.iterations = 0
        self._model = None
        self._state = {}
        self._seg_l1 = None  # set_l1's per-segment coefficients (a backend array), or None
        self._l1_rule = spec.L1_GRADIENT

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.hyperparameters().items())})"

    def hyperparameters(self):
        return {"lr": self.lr, "weight_decay": self.weight_decay, "decay_bias": self.decay_bias}

    def bind(self, model):
        """Allocate the state for ``model`` (once; the optimizer then belongs to it)."""
        if self._model is model:
            return
        if self._model is not None:
            raise ValueError("this optimizer is already bound to another model; create one optimizer per model")
        k, layout = model._k, model._layout
        self._k = k
        decay = [self.weight_decay if (self.decay_bias or not s.is_vector) else 0.0 for s in layout.trained]
        self._seg_decay = k.to_device(np.array(decay, dtype=np.float64), np.float64)
        self._state = {name: k.to_device(np.full(layout.size, self._initial_value(name)), model.dtype)
                       for name in self.state_names}
        self._model = model

    def _initial_value(self, name):
        return 0.0

    def set_l1(self, seg_l1, rule):
        """Apply an L1 penalty after each step, as kernels.spec's ``l1_rule``.

        ``seg_l1``: the penalty per segment of the bound model's layout (a float64 backend
        array of (S,) made by ``to_device``, 0 where a segment is exempt), or None for none;
        ``rule``: ``kernels.spec.L1_GRADIENT`` (nothing after the step: the penalty is then
        in the gradient, grad_sq_norms), ``L1_CLIPPED`` or ``L1_PROXIMAL``. With frozen
        layers, each run of trained segments gets its slice of ``seg_l1``."""
        if rule not in (spec.L1_GRADIENT, spec.L1_CLIPPED, spec.L1_PROXIMAL):
            raise ValueError(f"rule must be kernels.spec.L1_GRADIENT, L1_CLIPPED or L1_PROXIMAL; got {rule!r}")
        self._seg_l1, self._l1_rule = seg_l1, rule

    def learning_rate(self, iteration=None):
        """The learning rate of update ``iteration`` (default: the next one)."""
        iteration = self.iterations if iteration is None else iteration
        lr = self.lr(iteration) if callable(self.lr) else self.lr
        if type(lr) is float and 0.0 <= lr < math.inf:  # the usual case, first: once per update
            return lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)) or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"lr schedule must return a finite number >= 0; at update {iteration} it returned {lr!r}")
        return float(lr)

    def apply(self, params, grads, seg_scale, clip_value, status=None, diag=None):
        """One update of ``params`` from ``grads`` (clipped and scaled per segment).

        ``status``: the device record of the backend's ``guard_update``, whose skip flag
        makes the kernel change nothing. The update is counted all the same, since the host
        does not read the flag here; whoever reads it calls :meth:`_rewind`. ``diag``: None,
        or the (S, 2) float64 sums of kernels.spec's update diagnostics, added to.

        One kernel over the whole model; with frozen layers (``MLP.freeze``), one over each
        run of consecutive trained segments instead (slices of the flat buffers, offsets
        counted from the run's start), so that frozen segments are neither stepped nor
        decayed and their optimizer state is untouched.
        """
        lr = self.last_lr = self.learning_rate()
        step = self.iterations + 1
        model = self._model
        if model._trained_runs is None:
            self._update_all(params, grads, seg_scale, clip_value, lr, step, status, diag)
        else:
            seg_l1, rule = self._seg_l1, self._l1_rule
            for run in model._trained_runs:
                e, s = run.elements, run.segments
                self._update(params[e], grads[e], {name: a[e] for name, a in self._state.items()},
                             (run.offsets, seg_scale[s], self._seg_decay[s], clip_value,
                              None if seg_l1 is None else seg_l1[s], rule), lr, step, status,
                             None if diag is None else diag[s])
        self._advance(step)
        self.iterations = step

    def _update_all(self, params, grads, seg_scale, clip_value, lr, step, status=None, diag=None):
        """The kernel call of update ``step`` over every segment of the model (none frozen),
        at rate ``lr``; neither counted nor a schedule called (:meth:`apply` does both)."""
        self._update(params, grads, self._state,
                     (self._model._offsets, seg_scale, self._seg_decay, clip_value, self._seg_l1, self._l1_rule),
                     lr, step, status, diag)

    def _update(self, params, grads, state, grad_args, lr, step, status, diag):
        """The kernel call of update ``step`` on ``params``, ``grads`` and the optimizer's
        ``state`` (dict of arrays), all of one run of segments (see :meth:`apply`)."""
        raise NotImplementedError

    def _advance(self, step):
        """Scalar state after update ``step``, once per update whatever the runs."""

    def _rewind(self, iterations):
        """Count the first ``iterations`` updates only: the kernels skipped those after them."""
        self.iterations = iterations

    # Checkpoints.
    def state_dict(self):
        return {"iterations": self.iterations, "scalars": self._scalar_state(),
                "arrays": {name: self._k.to_host(a).copy() for name, a in self._state.items()}}

    def load_state_dict(self, state):
        arrays = state["arrays"]
        if set(arrays) != set(self._state):
            raise ValueError(f"optimizer state must hold {sorted(self._state)}; got {sorted(arrays)}")
        for name, a in arrays.items():
            if a.shape != self._state[name].shape:
                raise ValueError(f"optimizer state {name} must have shape {self._state[name].shape}; got {a.shape}")
        for name, a in arrays.items():
            self._k.copy_into(self._state[name], a)
        self.iterations = int(state["iterations"])
        self._load_scalar_state(state["scalars"])

    def _scalar_state(self):
        return {}

    def _load_scalar_state(self, scalars):
        pass


class SGD(Optimizer):
    """torch SGD with momentum, dampening, nesterov and coupled weight decay."""

    decoupled = False

    def __init__(self, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, decay_bias=True):
        super().__init__(lr, weight_decay, decay_bias)
        self.momentum = number(momentum, "momentum", low=0.0)
        self.dampening = number(dampening, "dampening")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")
        self.state_names = ("momentum_buffer",)

    def hyperparameters(self):
        return {**super().hyperparameters(), "momentum": self.momentum, "dampening": self.dampening,
                "nesterov": self.nesterov}

    def _update(self, params, grads, state, grad_args, lr, step, status, diag):
        self._k.sgd(params, grads, state["momentum_buffer"], *grad_args, lr, self.momentum,
                    self.dampening, self.nesterov, self.decoupled, step == 1, status, diag)


class SGDW(SGD):
    """SGD with decoupled weight decay: ``p *= 1 - lr * weight_decay`` before the SGD step
    (AdamW's rule applied to SGD)."""

    decoupled = True


class Adagrad(Optimizer):
    """torch Adagrad: ``sum += g^2``, ``p -= lr g / (sqrt(sum) + eps)``."""

    state_names = ("sum",)

    def __init__(self, lr=1e-2, eps=1e-10, initial_accumulator_value=0.0, weight_decay=0.0, decay_bias=True):
        super().__init__(lr, weight_decay, decay_bias)
        self.eps = number(eps, "eps", low=0.0)
        self.initial_accumulator_value = number(initial_accumulator_value, "initial_accumulator_value", low=0.0)

    def hyperparameters(self):
        return {**super().hyperparameters(), "eps": self.eps, "initial_accumulator_value": self.initial_accumulator_value}

    def _initial_value(self, name):
        return self.initial_accumulator_value

    def _update(self, params, grads, state, grad_args, lr, step, status, diag):
        self._k.adagrad(params, grads, state["sum"], *grad_args, lr, self.eps, status, diag)


class RMSprop(Optimizer):
    """torch RMSprop, optionally centered and with momentum."""

    state_names = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, weight_decay=0.0,
                 decay_bias=True):
        super().__init__(lr, weight_decay, decay_bias)
        self.alpha = number(alpha, "alpha", low=0.0, high=1.0)
        self.eps = number(eps, "eps", low=0.0)
        self.momentum = number(momentum, "momentum", low=0.0)
        self.centered = bool(centered)

    def hyperparameters(self):
        return {**super().hyperparameters(), "alpha": self.alpha, "eps": self.eps, "momentum": self.momentum,
                "centered": self.centered}

    def _update(self, params, grads, state, grad_args, lr, step, status, diag):
        s = state
        self._k.rmsprop(params, grads, s["square_avg"], s["grad_avg"], s["momentum_buffer"], *grad_args, lr,
                        self.alpha, self.eps, self.momentum, self.centered, status, diag)


class Adadelta(Optimizer):
    """torch Adadelta."""

    state_names = ("square_avg", "acc_delta")

    def __init__(self, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, decay_bias=True):
        super().__init__(lr, weight_decay, decay_bias)
        self.rho = number(rho, "rho", low=0.0, high=1.0)
        self.eps = number(eps, "eps", low=0.0)

    def hyperparameters(self):
        return {**super().hyperparameters(), "rho": self.rho, "eps": self.eps}

    def _update(self, params, grads, state, grad_args, lr, step, status, diag):
        self._k.adadelta(params, grads, state["square_avg"], state["acc_delta"], *grad_args, lr,
                         self.rho, self.eps, status, diag)


class Adam(Optimizer):
    """torch Adam (coupled L2 weight decay), optionally AMSGrad."""

    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decay_bias=True):
        super().__init__(lr, weight_decay, decay_bias)
        self.betas = _check_betas(betas)
        self.eps = number(eps, "eps", low=0.0)
        self.amsgrad = bool(amsgrad)
        self.state_names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def hyperparameters(self):
        return {**super().hyperparameters(), "betas": self.betas, "eps": self.eps, "amsgrad": self.amsgrad}

    def _update(self, params, grads, state, grad_args, lr, step, status, diag):
        s = state
        self._k.adam(params, grads, s["exp_avg"], s["exp_avg_sq"], s.get("max_exp_avg_sq", s["exp_avg_sq"]),
                     *grad_args, lr, self.betas[0], self.betas[1], self.eps, step, self.decoupled, self.amsgrad,
                     status, diag)


class AdamW(Adam):
    """torch AdamW: Adam with decoupled weight decay ``p *= 1 - lr * weight_decay``."""

    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, decay_bias=True):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, decay_bias)


class NAdam(Optimizer):
    """torch NAdam with its momentum schedule ``mu_t = beta1 (1 - 0.5 * 0.96^(t momentum_decay))``."""

    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3, weight_decay=0.0,
                 decay_bias=True):
        super().__init__(lr, weight_decay, decay_bias)
        self.betas = _check_betas(betas)
        self.eps = number(eps, "eps", low=0.0)
        self.momentum_decay = number(momentum_decay, "momentum_decay", low=0.0)
        self.mu_product = 1.0

    def hyperparameters(self):
        return {**super().hyperparameters(), "betas": self.betas, "eps": self.eps,
                "momentum_decay": self.momentum_decay}

    def _mu(self, step):
        return self.betas[0] * (1.0 - 0.5 * 0.96 ** (step * self.momentum_decay))

    def _update(self, params, grads, state, grad_args, lr, step, status, diag):
        mu, mu_next = self._mu(step), self._mu(step + 1)
        self._k.nadam(params, grads, state["exp_avg"], state["exp_avg_sq"], *grad_args, lr,
                      self.betas[0], self.betas[1], self.eps, step, mu, mu_next, self.mu_product * mu, status, diag)

    def _advance(self, step):
        self.mu_product *= self._mu(step)

    def _rewind(self, iterations):
        # The product of the updates made, multiplied in the order _update multiplies it:
        # the same float as if the skipped updates had never been applied.
        super()._rewind(iterations)
        self.mu_product = 1.0
        for step in range(1, iterations + 1):
            self.mu_product *= self._mu(step)

    def _scalar_state(self):
        return {"mu_product": self.mu_product}

    def _load_scalar_state(self, scalars):
        self.mu_product = float(scalars["mu_product"])


CLASSES = {"sgd": SGD, "sgdw": SGDW, "adagrad": Adagrad, "rmsprop": RMSprop, "adadelta": Adadelta, "adam": Adam,
           "adamw": AdamW, "nadam": NAdam}
NAMES = tuple(CLASSES)
_NAME_DEFAULTS = {"sgd": {"lr": 1e-2}, "sgdw": {"lr": 1e-2}}  # torch's SGD has no default lr; by name 0.01


def get(optimizer, argument="optimizer") -> Optimizer:
    """An Optimizer from an object or a name (with torch defaults; "sgd" uses lr=0.01)."""
    if optimizer is None:
        return AdamW()
    if isinstance(optimizer, Optimizer):
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"{argument} must be an optimizer name or an engine.optim.Optimizer; got {type(optimizer).__name__}")
    name = optimizer.lower()
    if name not in CLASSES:
        raise ValueError(f"{argument} must be one of {', '.join(NAMES)}; got {optimizer!r}")
    return CLASSES[name](**_NAME_DEFAULTS.get(name, {}))
