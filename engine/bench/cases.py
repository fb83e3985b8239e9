"""One benchmark case per op of the backend interface (:class:`kernels.spec.Backend`):
its inputs at a workload's sizes, the bytes it moves, and a check against the reference.

``case(op, backend, workload)`` builds the inputs once, seeded, on the host, moves them
to the backend with ``to_device``, and returns a :class:`Case` whose ``call()`` runs the
op on them (what a benchmark times) and whose ``check()`` runs it once more on fresh
copies, on the backend and on the NumPy reference, and raises :class:`KernelMismatch`
where they disagree. Benchmarks call ``check()`` before they time anything: a timing of
a wrong kernel is worse than none.

Sizes. At workload W (S, M or L of :data:`engine.bench.workloads.WORKLOADS`): a dense
layer is W's widest (its batch, its largest fan-in x fan-out), losses and outputs are
(batch, classes), optimizers and gradient norms run over all of W's parameters in its
segments (W and b per layer). ``case(..., dims={...})`` sets any size by hand (the
kernel rows of ``python -m engine bench`` use it, e.g. AdamW over 16M parameters).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kernels import spec

from .. import backend as backend_module
from .workloads import WORKLOADS, num_parameters, segment_offsets

# Members of the interface that are not ops on arrays: ``capture`` records other ops as a
# graph; what it saves shows in the training-step benchmarks, which replay one on cupy.
NOT_OPS = ("capture",)
OPS = sorted(member for member, value in vars(spec.Backend).items()
             if inspect.isfunction(value) and not member.startswith("_") and member not in NOT_OPS)

# Tolerance of a backend against the reference, as a share of the output's largest
# magnitude (at least 1), per dtype the op computes in: float32 sums (GEMMs over 4096 terms, row reductions) are added in
# another order than NumPy's, each rounding at 2^-24 relative; float64 likewise at 2^-53.
TOLERANCE = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-10}


class KernelMismatch(AssertionError):
    """A backend's result differs from the reference's: the kernel is wrong, so timing it
    would measure nothing worth having."""


def workload_dims(workload):
    """The sizes of every op at ``workload`` (see the module docstring)."""
    sizes, batch = WORKLOADS[workload]
    widest = max(zip(sizes[:-1], sizes[1:]), key=lambda pair: pair[0] * pair[1])
    return {"batch": batch, "fan_in": widest[0], "fan_out": widest[1], "classes": sizes[-1],
            "n_params": num_parameters(sizes), "offsets": segment_offsets(sizes)}


@dataclass
class Inputs:
    """An op's arguments (host arrays where the op takes arrays), which of them it writes
    (compared against the reference), and the bytes one call reads and writes."""

    args: list
    outputs: tuple
    bytes: int
    flops: int = 0


def _normal(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _matrix(d, rng, dtype):
    return _normal(rng, (d["batch"], d["fan_out"]), dtype)


def _offsets(d):
    return d.get("offsets", np.array([0, d["n_params"]], np.int64))


def _arrays_in(d, rng, dtype):
    host = _matrix(d, rng, dtype)
    return host.nbytes, host


def _to_device(d, rng, dtype):
    size, host = _arrays_in(d, rng, dtype)
    return Inputs([host, dtype], (), 2 * size)


def _to_host(d, rng, dtype):
    size, host = _arrays_in(d, rng, dtype)
    return Inputs([host], (), 2 * size)


def _allocation(d, rng, dtype):
    shape = (d["batch"], d["fan_out"])
    return Inputs([shape, dtype], (), int(np.prod(shape)) * np.dtype(dtype).itemsize)


def _copy_into(d, rng, dtype):
    size, src = _arrays_in(d, rng, dtype)
    return Inputs([np.empty_like(src), src], (0,), 2 * size)


def _take_rows(d, rng, dtype):
    rows = 64 * d["batch"]  # a data set of 64 batches kept on the device, as fit keeps it
    src = _normal(rng, (rows, d["fan_in"]), dtype)
    index = rng.permutation(rows)[:d["batch"]].astype(np.int64)
    out = np.empty((d["batch"], d["fan_in"]), dtype)
    return Inputs([src, index, out], (2,), 2 * out.nbytes + index.nbytes)


def _all_finite(d, rng, dtype):
    data = _normal(rng, (64 * d["batch"], d["fan_in"]), dtype)  # the data set fit checks, 64 batches
    return Inputs([data], (), data.nbytes)


def _layer(d, rng, dtype):
    n, i, o = d["batch"], d["fan_in"], d["fan_out"]
    X = _normal(rng, (n, i), dtype)
    W = _normal(rng, (i, o), dtype, (2.0 / i) ** 0.5)
    b = _normal(rng, o, dtype, 0.1)
    return X, W, b


def _dense_forward(d, rng, dtype):
    X, W, b = _layer(d, rng, dtype)
    Z, Y = (np.empty((len(X), W.shape[1]), dtype) for _ in range(2))
    return Inputs([X, W, b, spec.RELU, 0.0, None, d.get("dropout", 0.0), 7, Z, Y], (8, 9),
                  X.nbytes + W.nbytes + 2 * Z.nbytes, 2 * Z.size * X.shape[1])


def _dense_backward(d, rng, dtype):
    X, W, b = _layer(d, rng, dtype)
    Z = X @ W + b
    dY = _normal(rng, Z.shape, dtype)
    dZ, dW, db, dX = np.empty_like(Z), np.empty_like(W), np.empty_like(b), np.empty_like(X)
    return Inputs([dY, X, W, Z, spec.RELU, 0.0, None, d.get("dropout", 0.0), 7, dZ, dW, db, None, dX],
                  (9, 10, 11, 13), 3 * Z.nbytes + 2 * X.nbytes + 2 * W.nbytes, 4 * Z.size * X.shape[1])


def _norm_forward(d, rng, dtype):
    """Batch norm in training after the widest layer's GEMM (Z = X @ W given): statistics,
    running estimates, normalization, relu and dropout; Z read, xhat and Y written (the
    statistics passes re-read Z, from cache on the CPU, not counted)."""
    n, o = d["batch"], d["fan_out"]
    Z = _normal(rng, (n, o), dtype)
    b, gamma, beta = _normal(rng, o, dtype, 0.1), 1 + _normal(rng, o, dtype, 0.1), _normal(rng, o, dtype, 0.1)
    running_mean, running_var, rstd = np.zeros(o, dtype), np.ones(o, dtype), np.empty(o, dtype)
    xhat, Y = np.empty_like(Z), np.empty_like(Z)
    return Inputs([spec.NORM_BATCH, Z, b, gamma, beta, 1e-5, True, 0.1, running_mean, running_var,
                   spec.RELU, 0.0, None, d.get("dropout", 0.0), 7, xhat, rstd, Y], (8, 9, 15, 16, 17),
                  3 * Z.nbytes)


def _norm_backward(d, rng, dtype):
    """Batch norm's backward of :func:`_norm_forward`'s layer, xhat and rstd those of a
    batch: dY and xhat read, dZ written (the second pass's re-reads not counted)."""
    n, o = d["batch"], d["fan_out"]
    Z = _normal(rng, (n, o), dtype)
    rstd = (1 / np.sqrt(Z.var(axis=0) + 1e-5)).astype(dtype)
    xhat = ((Z - Z.mean(axis=0)) * rstd).astype(dtype)
    gamma, beta = 1 + _normal(rng, o, dtype, 0.1), _normal(rng, o, dtype, 0.1)
    dY = _normal(rng, Z.shape, dtype)
    dZ, db, dgamma, dbeta = np.empty_like(Z), *(np.empty_like(gamma) for _ in range(3))
    return Inputs([spec.NORM_BATCH, dY, xhat, gamma, beta, rstd, spec.RELU, 0.0, None,
                   d.get("dropout", 0.0), 7, dZ, db, dgamma, dbeta, None], (11, 12, 13, 14),
                  3 * Z.nbytes)


def _matmul(d, rng, dtype):
    X, W, _ = _layer(d, rng, dtype)
    out = np.empty((len(X), W.shape[1]), dtype)
    return Inputs([X, W, out], (2,), X.nbytes + W.nbytes + out.nbytes, 2 * out.size * X.shape[1])


def _dropout_mask(d, rng, dtype):
    out = np.empty((d["batch"], d["fan_out"]), dtype)
    return Inputs([d.get("dropout", 0.5), 12345, out], (2,), out.nbytes)


def _logits(d, rng, dtype):
    return _normal(rng, (d["batch"], d["classes"]), dtype, 3.0)


def _apply_output(d, rng, dtype):
    X = _logits(d, rng, dtype)
    return Inputs([spec.OUTPUT_SOFTMAX, X, np.empty_like(X)], (2,), 2 * X.nbytes)


def _loss_tail(logits):
    """(losses, grad, total) outputs of a loss, and their positions counted from the end."""
    return [None, np.empty_like(logits), np.zeros(1)], (-2, -1)


def _softmax_cross_entropy(d, rng, dtype):
    logits = _logits(d, rng, dtype)
    targets = rng.integers(0, d["classes"], len(logits)).astype(np.int64)
    tail, outputs = _loss_tail(logits)
    args = [logits, targets, 0.0, spec.NO_IGNORE, spec.MEAN] + tail
    return Inputs(args, tuple(len(args) + i for i in outputs), 2 * logits.nbytes + targets.nbytes)


def _elementwise_loss(extra):
    """Builder of an elementwise loss ``op(pred, targets, *extra, MEAN, losses, grad, total)``
    on (batch, classes), with targets in {0, 1} (valid for BCE, as good as any for the rest)."""
    def build(d, rng, dtype):
        pred = _logits(d, rng, dtype)
        targets = rng.integers(0, 2, pred.shape).astype(dtype)
        tail, outputs = _loss_tail(pred)
        args = [pred, targets, *extra, spec.MEAN] + tail
        return Inputs(args, tuple(len(args) + i for i in outputs), 3 * pred.nbytes)
    return build


def _gaussian_noise(d, rng, dtype):
    """Input noise on a batch of the first layer's inputs (read once, written once)."""
    X = _normal(rng, (d["batch"], d["fan_in"]), dtype)
    return Inputs([X, 0.1, 12345, X], (3,), 2 * X.nbytes)


def _mix_rows(d, rng, dtype):
    src = _normal(rng, (d["batch"], d["fan_in"]), dtype)
    perm = rng.permutation(len(src)).astype(np.int64)
    out = np.empty_like(src)
    return Inputs([src, perm, 0.3, out], (3,), 3 * src.nbytes + perm.nbytes)


def _class_indices(d, rng):
    return rng.integers(0, d["classes"], d["batch"]).astype(np.int64)


def _mix_class_targets(d, rng, dtype):
    targets = _class_indices(d, rng)
    out = np.empty((len(targets), d["classes"]), dtype)
    return Inputs([targets, rng.permutation(len(targets)).astype(np.int64), 0.3, d["classes"], out],
                  (4,), out.nbytes + 3 * targets.nbytes)


def _flat(d, rng, dtype):
    """params, grads and the segment offsets of an optimizer over ``n_params``."""
    n = d["n_params"]
    return _normal(rng, n, dtype, 1e-1), _normal(rng, n, dtype, 1e-2), _offsets(d)


def _segment_factors(offsets):
    """seg_scale 1 and seg_decay 1e-2 per segment (float64, as the trainer keeps them)."""
    segments = len(offsets) - 1
    return np.ones(segments), np.full(segments, 1e-2)


def _grad_sq_norms(d, rng, dtype):
    _, grads, offsets = _flat(d, rng, dtype)
    return Inputs([grads, offsets, np.inf, np.empty(len(offsets) - 1)], (3,), grads.nbytes)


def _state(rng, like, count):
    """``count`` optimizer state buffers, non-negative (squares and their averages)."""
    return [np.abs(_normal(rng, like.shape, like.dtype, 1e-2)) for _ in range(count)]


# What every optimizer case passes after clip_value: no L1 rule after the step, as a
# trainer without l1 (or with the penalty in the gradient) calls them.
_NO_L1 = (None, spec.L1_GRADIENT)


def _optimizer(state_count, hyper, used_state=None):
    """Builder of an optimizer call ``op(params, grads, *state, offsets, seg_scale,
    seg_decay, clip_value, seg_l1, l1_rule, *hyper)``. It reads p, g and each state buffer
    it uses (``used_state``, default all) and writes p and those back: ``3 + 2 used_state``
    words per parameter."""
    used = state_count if used_state is None else used_state

    def build(d, rng, dtype):
        params, grads, offsets = _flat(d, rng, dtype)
        state = _state(rng, params, state_count)
        args = [params, grads, *state, offsets, *_segment_factors(offsets), np.inf, *_NO_L1,
                *hyper(3)]
        return Inputs(args, (0, *range(2, 2 + state_count)), (3 + 2 * used) * params.nbytes)
    return build


def _nadam_hyper(step, beta1=0.9, psi=0.004):
    """NAdam's arguments at ``step``: torch's momentum schedule
    ``mu_t = beta1 (1 - 0.5 * 0.96^(t psi))`` and the product of the mu's so far."""
    mu = [beta1 * (1 - 0.5 * 0.96 ** (t * psi)) for t in range(1, step + 2)]
    return (2e-3, beta1, 0.999, 1e-8, step, mu[-2], mu[-1], float(np.prod(mu[:-1])))


def _adam(d, rng, dtype):
    """AdamW (decoupled decay, no amsgrad: ``max_exp_avg_sq`` unused), as the workloads."""
    params, grads, offsets = _flat(d, rng, dtype)
    m, v = _state(rng, params, 2)
    args = [params, grads, m, v, v, offsets, *_segment_factors(offsets), np.inf, *_NO_L1,
            1e-3, 0.9, 0.999, 1e-8, 3, True, False]
    return Inputs(args, (0, 2, 3), 7 * params.nbytes)


def _max_norm(d, rng, dtype):
    """The widest layer's W, at a bound below its columns' norms (about sqrt(2) with He
    scaling), so that every column is rescaled: W read twice, written once."""
    _, W, _ = _layer(d, rng, dtype)
    return Inputs([W, 1.0], (0,), 3 * W.nbytes)


def _guard_update(d, rng, dtype):
    segments = len(_offsets(d)) - 1
    sq_norms = np.abs(rng.standard_normal(segments))
    args = [np.array([2.5]), sq_norms, 0.5, 1.0, 3, True, np.empty(segments), np.zeros(spec.GUARD_SIZE)]
    return Inputs(args, (6, 7), 3 * sq_norms.nbytes)


def _metric_sums(d, rng, dtype):
    scores = _logits(d, rng, dtype)
    targets = rng.integers(0, d["classes"], len(scores)).astype(np.int64)
    return Inputs([spec.METRIC_ACCURACY, 0.0, scores, targets, np.zeros(2)], (4,), scores.nbytes + targets.nbytes)


BUILDERS: dict[str, Callable] = {
    "to_device": _to_device,
    "to_host": _to_host,
    "empty": _allocation,
    "zeros": _allocation,
    "copy_into": _copy_into,
    "take_rows": _take_rows,
    "all_finite": _all_finite,
    "dense_forward": _dense_forward,
    "dense_backward": _dense_backward,
    "norm_forward": _norm_forward,
    "norm_backward": _norm_backward,
    "matmul": _matmul,
    "dropout_mask": _dropout_mask,
    "apply_output": _apply_output,
    "softmax_cross_entropy": _softmax_cross_entropy,
    "binary_cross_entropy": _elementwise_loss(()),
    "mse": _elementwise_loss(()),
    "huber": _elementwise_loss((1.0,)),
    "gaussian_noise": _gaussian_noise,
    "mix_rows": _mix_rows,
    "mix_class_targets": _mix_class_targets,
    "grad_sq_norms": _grad_sq_norms,
    # torch's defaults, and SGD with momentum 0.9 (the hyperparameters come last, as a
    # function of the step number, 3 here)
    "sgd": _optimizer(1, lambda step: (1e-2, 0.9, 0.0, False, False, False)),
    "adagrad": _optimizer(1, lambda step: (1e-2, 1e-10)),
    # not centered, no momentum: grad_avg and momentum_buf untouched
    "rmsprop": _optimizer(3, lambda step: (1e-2, 0.99, 1e-8, 0.0, False), used_state=1),
    "adadelta": _optimizer(2, lambda step: (1.0, 0.9, 1e-6)),
    "adam": _adam,
    "nadam": _optimizer(2, _nadam_hyper),
    "max_norm": _max_norm,
    "guard_update": _guard_update,
    "metric_sums": _metric_sums,
}


def _placed(k, args):
    """``args`` with each host array moved to backend ``k`` in its own dtype (the builders
    made them in the case's dtype, index arrays int64, loss and decision buffers float64)."""
    return [k.to_device(arg, arg.dtype) if isinstance(arg, np.ndarray) else arg for arg in args]


# Ops whose first argument is a host array by contract: they are given it as it is.
_HOST_INPUT = {"to_device"}


@dataclass
class Case:
    """One op on one backend at one size: ``call()`` runs it (on inputs moved to the
    backend once), ``check()`` compares it with the reference, ``bytes`` and ``flops``
    are one call's memory traffic and arithmetic (for GB/s and GFLOP/s)."""

    op: str
    backend: str
    label: str
    inputs: Inputs
    dtype: np.dtype

    def __post_init__(self):
        self.k = backend_module.module(self.backend)
        self.function = getattr(self.k, self.op)
        self.args = self._args(self.k)

    @property
    def bytes(self):
        return self.inputs.bytes

    @property
    def flops(self):
        return self.inputs.flops

    def _args(self, k):
        if self.op in _HOST_INPUT:
            return list(self.inputs.args)
        if self.op == "to_host":
            return [k.to_device(self.inputs.args[0], self.dtype)]
        return _placed(k, [arg.copy() if isinstance(arg, np.ndarray) else arg for arg in self.inputs.args])

    def call(self):
        return self.function(*self.args)

    def check(self):
        """Run the op once on fresh copies of the inputs, here and on the NumPy reference,
        and raise KernelMismatch naming the first output that differs."""
        reference = backend_module.module("numpy")
        mine, theirs = self._args(self.k), self._args(reference)
        results = [getattr(self.k, self.op)(*mine), getattr(reference, self.op)(*theirs)]
        pairs = [(f"output {i}", self.k.to_host(mine[i]), reference.to_host(theirs[i]))
                 for i in self.inputs.outputs]
        if self.op in ("to_device", "to_host", "empty", "zeros"):
            results = [self._host(k, r) for k, r in zip((self.k, reference), results)]
        if self.op == "empty":  # its values are unspecified: its shape and dtype only
            results = [np.empty(0, r.dtype).reshape(0, *r.shape) for r in results]
        pairs.append(("result", *results))
        for name, got, want in pairs:
            self._compare(name, got, want)

    @staticmethod
    def _host(k, value):
        return value if isinstance(value, np.ndarray) else k.to_host(value)

    def _compare(self, name, got, want):
        where = f"{self.op} on {self.backend} ({self.label}), {name}"
        if want is None or got is None:
            if got is not want:
                raise KernelMismatch(f"{where}: {got!r} where the reference gives {want!r}")
            return
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape or got.dtype != want.dtype:
            raise KernelMismatch(f"{where}: {got.dtype}{got.shape} where the reference gives {want.dtype}{want.shape}")
        scale = float(np.max(np.abs(want), initial=0.0)) if want.size else 0.0
        # The computation's precision, not the output's: a float64 loss total of a
        # float32 batch carries float32 rounding. Integers must match exactly.
        tolerance = TOLERANCE[self.dtype] * max(scale, 1.0) if want.dtype.kind == "f" else 0.0
        if not np.allclose(got, want, rtol=0.0, atol=tolerance, equal_nan=True):
            worst = float(np.max(np.abs(got.astype(np.float64) - want)))
            raise KernelMismatch(f"{where}: differs from the reference by up to {worst:.3g} "
                                 f"(allowed {tolerance:.3g})")


def inputs(op, workload="M", dims=None, dtype=np.float32, seed=0):
    """The host :class:`Inputs` of ``op`` at ``workload``'s sizes, with ``dims`` overriding
    any of them (see :func:`workload_dims`); no backend involved."""
    if op not in BUILDERS:
        raise ValueError(f"op must be one of {', '.join(OPS)}; got {op!r}")
    sizes = workload_dims(workload) if workload in WORKLOADS else {}
    sizes.update(dims or {})
    if dims and "n_params" in dims and "offsets" not in dims:
        sizes.pop("offsets", None)  # one segment over the n_params given
    return BUILDERS[op](sizes, np.random.default_rng(seed), np.dtype(dtype))


def case(op, backend, workload="M", dims=None, dtype=np.float32, seed=0):
    """The :class:`Case` of ``op`` on ``backend`` (see :func:`inputs` for the sizes)."""
    return Case(op, backend, workload if dims is None else _dims_label(dims),
                inputs(op, workload, dims, dtype, seed), np.dtype(dtype))


def _dims_label(dims):
    return ", ".join(f"{key} {value}" for key, value in dims.items() if key != "offsets")
