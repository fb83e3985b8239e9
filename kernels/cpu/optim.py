"""Optimizer updates over the flat parameter buffer, one parallel pass (see kernels.spec).

Every update is one ``prange`` over fixed blocks of BLOCK elements: a block finds the
segment its first element belongs to and walks the pieces of the segments it overlaps,
each with its own ``seg_scale`` and ``seg_decay``. Models have a few large segments
(weights) and several tiny ones (biases, slopes), so blocks balance the threads where a
parallel loop per segment would not, and the whole model is one parallel region.

A piece is updated by a loop of its own (one function per optimizer, on 1-D views):
LLVM vectorises such a loop, flags and all, where the same loop written inline in the
kernel's block walk stayed scalar (AdamW measured at 55 GB/s against 25 GB/s).

With ``diag`` (kernels.spec), each piece also sums its elements' ``(p' - p)^2`` and ``p^2``
in float64 inside the same loop, into a slot per (block, segment) that the kernel then
adds to ``diag`` in block order, as :func:`grad_sq_norms` adds its partial sums: the
result does not depend on the threads. Without it, ``tally`` is None: numba compiles the
loops without those sums, so an update without diagnostics runs the code it ran before.

Arithmetic is in the dtype of the parameters with every constant rounded to it first,
in the order the reference evaluates, so float32 results agree with it to rounding:
wrappers compute the constants as Python floats (the cheapest arguments to pass) and
the kernels round them. Every kernel comes serial and parallel
(:func:`kernels.cpu.jit.serial_and_parallel`).
"""
import functools
import math

import numpy as np
from numba import prange, types
from numba.extending import overload

from .. import spec
from .jit import PARALLEL_MIN_WORK, inline, row_loop, scalar, serial_and_parallel
from .vecmath import cast_like, cast_to, clear

BLOCK = 16384  # elements per parallel work item: 64 KiB of float32 per buffer

_SGD, _ADAGRAD, _RMSPROP, _ADADELTA, _ADAM, _NADAM = range(6)
_L1_CLIPPED = spec.L1_CLIPPED


@inline
def _clip(g, clip_value):
    # NaN fails both comparisons and passes through, as in np.clip.
    return clip_value if g > clip_value else (-clip_value if g < -clip_value else g)


@inline
def _decayed(g, p, clip_value, scale, decay):
    """The effective gradient ``clip(g) * seg_scale + seg_decay * p`` of kernels.spec."""
    return _clip(g, clip_value) * scale + decay * p


@inline
def _decay_step(decoupled, old, g, clip_value, scale, decay, shrink):
    """(parameter, gradient) the step starts from: decoupled decay (SGDW, AdamW) shrinks the
    parameter, ``old * (1 - lr wd)`` (``shrink``), coupled decay adds ``wd p`` to g."""
    if decoupled:
        return old * shrink, _clip(g, clip_value) * scale
    return old, _decayed(g, old, clip_value, scale, decay)


@inline
def _sign(x):
    """np.sign in the dtype of x: 0 for +-0, NaN for NaN."""
    one = cast_like(1.0, x)
    return one if x > 0 else (-one if x < 0 else (cast_like(0.0, x) if x == 0 else x))


@inline
def _l1_step(l1, old, new):
    """kernels.spec's L1 rule after the step: ``l1`` = (rule, t) with t = lr * seg_l1[s] in the
    dtype, ``old`` the parameter before the update, ``new`` the stepped one."""
    rule, t = l1
    if rule == _L1_CLIPPED:
        size = abs(old)
        return new - (size if size < t else t) * _sign(old)
    excess = abs(new) - t
    return _sign(new) * (excess if excess > 0 or excess != excess else cast_like(0.0, excess))


def _l1_of(seg_l1, l1_rule, lr, s, like):
    """The ``l1`` of the piece updates for segment s: None without ``seg_l1`` (typed so, and
    pruned by numba), else (l1_rule, lr * seg_l1[s] rounded to the type of ``like``)."""


@overload(_l1_of, inline="always")
def _l1_of_typed(seg_l1, l1_rule, lr, s, like):
    if isinstance(seg_l1, types.NoneType):
        return lambda seg_l1, l1_rule, lr, s, like: None
    return lambda seg_l1, l1_rule, lr, s, like: (l1_rule, cast_like(lr * seg_l1[s], like))


@inline
def _tally(change_sq, param_sq, old, new):
    """The running sums of kernels.spec's ``diag`` with one more element: ``(p' - p)^2``
    and ``p^2`` in float64, p = ``old`` and p' = ``new`` as the dtype holds them."""
    before = np.float64(old)
    change = np.float64(new) - before
    return change_sq + change * change, param_sq + before * before


@inline
def _post(tally, change_sq, param_sq):
    """Add a piece's sums to its slot ``tally`` (2,) (a caller that has none skips this)."""
    tally[0] += change_sq
    tally[1] += param_sq


# ------------------------------------------------------------------- piece updates
# Each updates the views p, g, s1, s2, s3 of one piece of one segment in place; ``c``
# holds the optimizer's constants in the dtype (a tuple), ``flags`` its booleans. Unused
# state buffers are stand-ins that are never touched. ``tally``: None, or the (2,) slot
# that receives the piece's sums of kernels.spec's ``diag`` (:func:`_tally`).
@row_loop
def _sgd(p, g, buf, unused_1, unused_2, scale, decay, clip_value, c, flags, l1, tally):
    """torch SGD / SGDW (``decoupled``): momentum ``buf``, dampening, nesterov (kernels.spec)."""
    lr, momentum, one_minus_dampening = c[0], c[1], c[2]
    use_momentum, nesterov, first_step, decoupled = flags
    shrink = cast_like(1.0, lr) - lr * decay
    change_sq = param_sq = 0.0
    for i in range(p.size):
        old = p[i]
        param, d = _decay_step(decoupled, old, g[i], clip_value, scale, decay, shrink)
        if use_momentum:
            b = d if first_step else momentum * buf[i] + one_minus_dampening * d
            buf[i] = b
            d = d + momentum * b if nesterov else b
        new = param - lr * d
        if l1 is not None:
            new = _l1_step(l1, old, new)
        p[i] = new
        if tally is not None:
            change_sq, param_sq = _tally(change_sq, param_sq, old, new)
    if tally is not None:
        _post(tally, change_sq, param_sq)


@row_loop
def _adagrad(p, g, state_sum, unused_1, unused_2, scale, decay, clip_value, c, flags, l1, tally):
    """``sum += g^2``; ``p -= lr g / (sqrt(sum) + eps)``."""
    lr, eps = c[0], c[1]
    change_sq = param_sq = 0.0
    for i in range(p.size):
        old = p[i]
        d = _decayed(g[i], old, clip_value, scale, decay)
        total = state_sum[i] + d * d
        state_sum[i] = total
        new = old - lr * d / (math.sqrt(total) + eps)
        if l1 is not None:
            new = _l1_step(l1, old, new)
        p[i] = new
        if tally is not None:
            change_sq, param_sq = _tally(change_sq, param_sq, old, new)
    if tally is not None:
        _post(tally, change_sq, param_sq)


@row_loop
def _rmsprop(p, g, square_avg, grad_avg, buf, scale, decay, clip_value, c, flags, l1, tally):
    """``v = alpha v + (1 - alpha) g^2``, centered and momentum variants (kernels.spec)."""
    lr, alpha, one_minus_alpha, eps, momentum = c[0], c[1], c[2], c[3], c[4]
    centered, use_momentum = flags
    change_sq = param_sq = 0.0
    for i in range(p.size):
        old = p[i]
        d = _decayed(g[i], old, clip_value, scale, decay)
        v = alpha * square_avg[i] + one_minus_alpha * d * d
        square_avg[i] = v
        if centered:
            ga = alpha * grad_avg[i] + one_minus_alpha * d
            grad_avg[i] = ga
            avg = math.sqrt(v - ga * ga) + eps
        else:
            avg = math.sqrt(v) + eps
        if use_momentum:
            b = momentum * buf[i] + d / avg
            buf[i] = b
            new = old - lr * b
        else:
            new = old - lr * d / avg
        if l1 is not None:
            new = _l1_step(l1, old, new)
        p[i] = new
        if tally is not None:
            change_sq, param_sq = _tally(change_sq, param_sq, old, new)
    if tally is not None:
        _post(tally, change_sq, param_sq)


@row_loop
def _adadelta(p, g, square_avg, acc_delta, unused, scale, decay, clip_value, c, flags, l1, tally):
    """``v = rho v + (1 - rho) g^2``; ``delta = sqrt(u + eps) / sqrt(v + eps) g``; ..."""
    lr, rho, one_minus_rho, eps = c[0], c[1], c[2], c[3]
    change_sq = param_sq = 0.0
    for i in range(p.size):
        old = p[i]
        d = _decayed(g[i], old, clip_value, scale, decay)
        v = rho * square_avg[i] + one_minus_rho * d * d
        square_avg[i] = v
        u = acc_delta[i]
        delta = math.sqrt(u + eps) / math.sqrt(v + eps) * d
        acc_delta[i] = rho * u + one_minus_rho * delta * delta
        new = old - lr * delta
        if l1 is not None:
            new = _l1_step(l1, old, new)
        p[i] = new
        if tally is not None:
            change_sq, param_sq = _tally(change_sq, param_sq, old, new)
    if tally is not None:
        _post(tally, change_sq, param_sq)


@inline
def _moments(i, d, exp_avg, exp_avg_sq, beta1, one_minus_beta1, beta2, one_minus_beta2):
    m = beta1 * exp_avg[i] + one_minus_beta1 * d
    v = beta2 * exp_avg_sq[i] + one_minus_beta2 * d * d
    exp_avg[i] = m
    exp_avg_sq[i] = v
    return m, v


@row_loop
def _adam(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, scale, decay, clip_value, c, flags, l1, tally):
    """Adam / AdamW (``decoupled``: ``p *= 1 - lr wd`` first), amsgrad (kernels.spec).

    ``sqrt(v) / sqrt(1 - beta2^t)`` is computed as ``sqrt(v) * inv_sqrt_bc2``, the
    reciprocal taken once per update: a division less per element, where the sqrt and the
    divisions bound the loop (M's update serially 269 -> 204 us), for a rounding within
    an ulp of the division's. The product cannot overflow: sqrt(v) is at most the
    dtype's sqrt(max), and the reciprocal at most 1 / sqrt(1 - beta2)."""
    (lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, step_size, inv_sqrt_bc2) = (
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7])
    decoupled, amsgrad = flags
    shrink = cast_like(1.0, lr) - lr * decay
    change_sq = param_sq = 0.0
    for i in range(p.size):
        old = p[i]
        param, d = _decay_step(decoupled, old, g[i], clip_value, scale, decay, shrink)
        m, v = _moments(i, d, exp_avg, exp_avg_sq, beta1, one_minus_beta1, beta2, one_minus_beta2)
        if amsgrad:
            v_max = max_exp_avg_sq[i]
            if v > v_max or v != v:  # np.maximum: NaN wins
                v_max = v
            max_exp_avg_sq[i] = v_max
            v = v_max
        new = param - step_size * m / (math.sqrt(v) * inv_sqrt_bc2 + eps)
        if l1 is not None:
            new = _l1_step(l1, old, new)
        p[i] = new
        if tally is not None:
            change_sq, param_sq = _tally(change_sq, param_sq, old, new)
    if tally is not None:
        _post(tally, change_sq, param_sq)


@row_loop
def _nadam(p, g, exp_avg, exp_avg_sq, unused, scale, decay, clip_value, c, flags, l1, tally):
    """torch NAdam with the caller's momentum schedule (kernels.spec)."""
    (beta1, one_minus_beta1, beta2, one_minus_beta2, eps, bc2, grad_coef, avg_coef) = (
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7])
    change_sq = param_sq = 0.0
    for i in range(p.size):
        old = p[i]
        d = _decayed(g[i], old, clip_value, scale, decay)
        m, v = _moments(i, d, exp_avg, exp_avg_sq, beta1, one_minus_beta1, beta2, one_minus_beta2)
        denom = math.sqrt(v / bc2) + eps
        param = old - grad_coef * d / denom
        new = param - avg_coef * m / denom
        if l1 is not None:
            new = _l1_step(l1, old, new)
        p[i] = new
        if tally is not None:
            change_sq, param_sq = _tally(change_sq, param_sq, old, new)
    if tally is not None:
        _post(tally, change_sq, param_sq)


@inline
def _update_piece(kind, p, g, s1, s2, s3, scale, decay, clip_value, c, flags, l1, tally):
    # ``kind`` is a constant of the calling kernel: numba prunes the other branches.
    if kind == _SGD:
        _sgd(p, g, s1, s2, s3, scale, decay, clip_value, c, flags, l1, tally)
    elif kind == _ADAGRAD:
        _adagrad(p, g, s1, s2, s3, scale, decay, clip_value, c, flags, l1, tally)
    elif kind == _RMSPROP:
        _rmsprop(p, g, s1, s2, s3, scale, decay, clip_value, c, flags, l1, tally)
    elif kind == _ADADELTA:
        _adadelta(p, g, s1, s2, s3, scale, decay, clip_value, c, flags, l1, tally)
    elif kind == _ADAM:
        _adam(p, g, s1, s2, s3, scale, decay, clip_value, c, flags, l1, tally)
    else:
        _nadam(p, g, s1, s2, s3, scale, decay, clip_value, c, flags, l1, tally)


# ------------------------------------------------------------------------ kernels
@scalar
def _piece_end(offsets, start, stop, segment):
    """Where the piece of ``segment`` that starts at ``start`` ends within a block."""
    return min(stop, offsets[segment + 1])


@scalar
def _block_start(offsets, block, n):
    """(start, stop, first segment) of a block; empty segments are skipped."""
    start = block * BLOCK
    return start, min(n, start + BLOCK), np.searchsorted(offsets, start, side='right') - 1


@functools.cache
def _update_kernels(kind):
    """(serial, parallel) update kernel of one optimizer."""

    def build(loop):
        parallel = loop is prange

        def update(params, grads, s1, s2, s3, offsets, seg_scale, seg_decay, clip_value,
                   c0, c1, c2, c3, c4, c5, c6, c7, flags, seg_l1, l1_rule, lr, diag):
            """By blocks; in each, the pieces of its segments in order. ``c0``..``c7``:
            the optimizer's constants as floats, rounded to the dtype here.

            ``seg_l1`` (None: numba prunes the rule) and ``l1_rule``: kernels.spec's L1 rule
            after the step, with ``lr * seg_l1[s]`` computed in float64 and rounded.

            ``diag`` (None: numba prunes what follows) as kernels.spec's: serially each
            piece adds its sums straight into ``diag[s]``; in parallel into slot
            ``block + s`` of a zeroed array (the slots of grad_sq_norms, which never
            collide), then added to ``diag`` in block order: the same sums in the same
            order either way."""
            clip_value = cast_to(clip_value, params)
            c = (cast_to(c0, params), cast_to(c1, params), cast_to(c2, params),
                 cast_to(c3, params), cast_to(c4, params), cast_to(c5, params),
                 cast_to(c6, params), cast_to(c7, params))
            n = params.size
            blocks = -(-n // BLOCK)
            # Set before ``if diag``, not in it: numba 0.68 miscompiles a prange loop that
            # reads a scalar assigned only under a condition before it (every slot then
            # received the sum over all: tests/test_diagnostics.py).
            stride = 1 if parallel else 0
            if diag is not None:
                if parallel:
                    tallies = np.zeros((blocks + offsets.size, 2))
                else:
                    tallies = diag
            for block in loop(blocks):
                start, stop, s = _block_start(offsets, block, n)
                while start < stop:
                    end = _piece_end(offsets, start, stop, s)
                    if diag is None:
                        tally = None
                    else:
                        tally = tallies[block * stride + s]
                    l1 = _l1_of(seg_l1, l1_rule, lr, s, clip_value)
                    _update_piece(kind, params[start:end], grads[start:end], s1[start:end],
                                  s2[start:end], s3[start:end], cast_like(seg_scale[s], clip_value),
                                  cast_like(seg_decay[s], clip_value), clip_value, c, flags, l1,
                                  tally)
                    start = end
                    s += 1
            if diag is not None:
                if parallel:
                    for block in range(blocks):
                        start, stop, s = _block_start(offsets, block, n)
                        while start < stop:
                            diag[s, 0] += tallies[block + s, 0]
                            diag[s, 1] += tallies[block + s, 1]
                            start = _piece_end(offsets, start, stop, s)
                            s += 1
        return update

    return serial_and_parallel(build)


def _l1_coefficients(seg_l1, l1_rule):
    """The kernels' ``seg_l1``: None where no rule acts after the step (numba then compiles
    the update without it); ValueError for an unknown rule."""
    if l1_rule not in _L1_RULES:
        raise ValueError(f"l1_rule must be L1_GRADIENT, L1_CLIPPED or L1_PROXIMAL (0, 1, 2); got {l1_rule!r}")
    if seg_l1 is None or l1_rule == spec.L1_GRADIENT:
        return None
    return np.asarray(seg_l1, dtype=np.float64)


def _run(kind, params, grads, s1, s2, s3, offsets, seg_scale, seg_decay, clip_value, seg_l1,
         l1_rule, lr, constants, flags, status, diag):
    """Run the kernel of ``kind`` on state buffers s1..s3 (None where unused: params,
    never touched, stands in); ``constants``: up to 8 floats; ``seg_l1``, ``l1_rule`` and
    the op's ``lr``: kernels.spec's L1 rule; ``diag``: spec's (S, 2) sums, or None. Nothing
    runs when guard_update's ``status`` skips the update: read here, in Python, since on
    the CPU the record is host memory and the test costs less than passing it to the
    kernel."""
    seg_l1 = _l1_coefficients(seg_l1, l1_rule)
    states = (params if s1 is None else s1, params if s2 is None else s2, params if s3 is None else s3)
    constants += _PADDING[len(constants)]
    if _deferred:
        _deferred[-1].append(DeferredUpdate(kind, params, grads, states, offsets, seg_scale, seg_decay,
                                            clip_value, constants + (float(lr),), flags, seg_l1, diag))
        return
    if status is not None and status[_SKIP] != 0:
        return
    _UPDATES[kind][params.size >= PARALLEL_MIN_WORK](
        params, grads, *states, np.asarray(offsets, dtype=np.int64),
        np.asarray(seg_scale, dtype=np.float64), np.asarray(seg_decay, dtype=np.float64),
        clip_value, *constants, flags, seg_l1, int(l1_rule), float(lr), diag)


class DeferredUpdate:
    """An update op's kernel call, made by :func:`deferred_updates` instead of run: the
    kernel ``kind``, its arrays, its ``flags``, and ``values``: its 8 constants then its lr
    (a compiled step's row of per-step constants)."""

    __slots__ = ("kind", "params", "grads", "states", "offsets", "seg_scale", "seg_decay", "clip_value",
                 "values", "flags", "seg_l1", "diag")

    def __init__(self, kind, params, grads, states, offsets, seg_scale, seg_decay, clip_value, values, flags,
                 seg_l1, diag):
        self.kind, self.params, self.grads, self.states, self.offsets = kind, params, grads, states, offsets
        self.seg_scale, self.seg_decay, self.clip_value, self.values = seg_scale, seg_decay, clip_value, values
        self.flags, self.seg_l1, self.diag = flags, seg_l1, diag


_deferred = []  # the lists of the active deferred_updates(), innermost last


class deferred_updates:  # noqa: N801  (used as a function: ``with deferred_updates() as calls``)
    """Within it, the update ops (sgd ... nadam) run nothing: each appends the kernel call
    it would make, a :class:`DeferredUpdate`, to the list this yields, computing its
    constants as it would to run. kernels.cpu.steps runs them inside a compiled step,
    after the guard of that step (so they are never skipped here).

    A class rather than a contextlib generator: entered once per train_step, where the
    generator's with-statement cost some 3 us of an S step's 70."""

    __slots__ = ("calls",)

    def __enter__(self):
        self.calls = []
        _deferred.append(self.calls)
        return self.calls

    def __exit__(self, *exception):
        _deferred.pop()


_UPDATES = tuple(_update_kernels(kind) for kind in range(6))  # by kind; compiled on first call
_PADDING = tuple((0.0,) * (8 - n) for n in range(9))  # by the number of an op's constants
_SKIP = spec.GUARD_SKIP
_L1_RULES = (spec.L1_GRADIENT, spec.L1_CLIPPED, spec.L1_PROXIMAL)


@row_loop
def _sum_sq(grads, clip_value):
    """sum clip(g)^2 in float64, over a 1-D view (a loop of its own, so it vectorises)."""
    total = 0.0
    for i in range(grads.size):
        g = np.float64(_clip(grads[i], clip_value))
        total += g * g
    return total


@row_loop
def _penalized_sum_sq(grads, params, l2, l1, clip_value, l1_in_gradient):
    """grad_sq_norms' pass over a 1-D view with a penalty (kernels.spec): writes
    ``g + l2 p (+ l1 sign(p))`` into ``grads`` and returns (sum clip(g)^2, sum p^2, sum |p|)
    in float64 over the view."""
    norm_sq = param_sq = param_abs = 0.0
    for i in range(grads.size):
        p = params[i]
        g = grads[i] + l2 * p
        if l1_in_gradient:
            g = g + l1 * _sign(p)
        grads[i] = g
        clipped = np.float64(_clip(g, clip_value))
        norm_sq += clipped * clipped
        w = np.float64(p)
        param_sq += w * w
        param_abs += abs(w)
    return norm_sq, param_sq, param_abs


@inline
def _penalty(seg_l1, seg_l2, s, param_sq, param_abs):
    """A piece's share of the penalty's value: l2 / 2 sum p^2 + l1 sum |p| (float64)."""
    return seg_l2[s] / 2 * param_sq + seg_l1[s] * param_abs


def _build_grad_sq_norms(loop):
    parallel = loop is prange

    def grad_sq_norms(grads, offsets, clip_value, out, acc, params, seg_l1, seg_l2, l1_in_gradient,
                      total):
        """``out[s] = sum_{i in s} clip(grads[i])^2`` in float64 (spec.Backend.grad_sq_norms),
        and ``acc[s] += out[s]`` unless ``acc`` is None (then compiled without that loop).

        The pieces of one segment add in block order, whatever the threads. Serially,
        straight into ``out``. In parallel, block ``b`` stores the partial sum of its piece
        of segment ``s`` at ``b + s``: the pieces of one block have consecutive segments
        and the next block starts at or after its last one, so these slots never collide;
        the partials are then added in order. Only that path allocates (a few KiB per 16M
        values, against a pass over them).

        With ``params`` (None: compiled without), each piece first adds the penalty's
        gradient to its gradients, and its share of the penalty's value (:func:`_penalty`)
        is added up piece by piece in block order, serially as it comes, in parallel from
        slots beside the norms' (so both give the same bits), then to ``total[0]``.
        """
        n = grads.size
        clip_value = cast_to(clip_value, grads)
        blocks = -(-n // BLOCK)
        clear(out)
        if parallel:
            sums, stride = np.zeros(blocks + offsets.size), 1
            if params is not None:
                weights = np.zeros((blocks + offsets.size, 2))
        else:
            sums, stride = out, 0
        penalty = 0.0
        for block in loop(blocks):
            start, stop, s = _block_start(offsets, block, n)
            while start < stop:
                end = _piece_end(offsets, start, stop, s)
                if params is None:
                    sums[block * stride + s] += _sum_sq(grads[start:end], clip_value)
                else:
                    norm_sq, param_sq, param_abs = _penalized_sum_sq(
                        grads[start:end], params[start:end], cast_like(seg_l2[s], clip_value),
                        cast_like(seg_l1[s], clip_value), clip_value, l1_in_gradient)
                    sums[block * stride + s] += norm_sq
                    if parallel:
                        weights[block + s, 0] = param_sq
                        weights[block + s, 1] = param_abs
                    else:
                        penalty += _penalty(seg_l1, seg_l2, s, param_sq, param_abs)
                start = end
                s += 1
        if parallel:
            for block in range(blocks):
                start, stop, s = _block_start(offsets, block, n)
                while start < stop:
                    out[s] += sums[block + s]
                    if params is not None:
                        penalty += _penalty(seg_l1, seg_l2, s, weights[block + s, 0],
                                            weights[block + s, 1])
                    start = _piece_end(offsets, start, stop, s)
                    s += 1
        if acc is not None:
            for s in range(out.size):
                acc[s] += out[s]
        if total is not None:
            total[0] += penalty
    return grad_sq_norms


_GRAD_SQ_NORMS = serial_and_parallel(_build_grad_sq_norms)


def _build_all_finite(loop):
    def all_finite(values):
        """Whether every element of the 1-D ``values`` is finite: ``sum_i (v_i - v_i)`` in
        the dtype is 0, where an inf or a NaN makes it NaN. (The subtraction stays: the
        kernels' fastmath flags have no 'nnan' or 'ninf', under which it would fold to 0.)
        Half the work of grad_sq_norms' pass, which converts to float64 and squares."""
        total = cast_to(0.0, values)
        for i in loop(values.size):
            total += values[i] - values[i]
        return total == 0
    return all_finite


_ALL_FINITE = serial_and_parallel(_build_all_finite)
# Without a penalty an element of the norms is a conversion and a multiply-add, 0.09 ns on
# one core here, some 8x less than the streaming pass PARALLEL_MIN_WORK assumes; so the
# threads' wake-up pays only from 8x its elements: M's 669,706 gradients took 59 us
# serially against 85 on 2 threads, its AdamW update (0.34 ns an element) 230 against 159.
NORMS_WORK_PER_ELEMENT = 1 / 8  # and the lighter _ALL_FINITE's


def all_finite(values):
    """spec.Backend.all_finite with the kernel of a compiled step's gradient check, on a
    flat view of ``values`` (a flat copy where its rows are not contiguous). On the S
    bench's data set (4096 x 64 float32), 13 us against 44 us for NumPy's finite sum."""
    if values.dtype.kind != "f":
        return True
    flat = values.reshape(-1)
    return bool(_ALL_FINITE[flat.size * NORMS_WORK_PER_ELEMENT >= PARALLEL_MIN_WORK](flat))


def grad_sq_norms(grads, offsets, clip_value, out, acc=None, params=None, seg_l1=None, seg_l2=None,
                  l1_in_gradient=True, total=None):
    if params is None:
        seg_l1 = seg_l2 = total = None  # nothing of the penalty is read
    else:
        if seg_l1 is None or seg_l2 is None:
            raise ValueError("seg_l1, seg_l2: (S,) float64 arrays are required with params")
        if params.shape != grads.shape or params.dtype != grads.dtype:
            raise ValueError(f"params must have grads' shape {grads.shape} and dtype {grads.dtype}; "
                             f"got {params.shape} {params.dtype}")
        seg_l1 = np.asarray(seg_l1, dtype=np.float64)
        seg_l2 = np.asarray(seg_l2, dtype=np.float64)
    work = grads.size * (NORMS_WORK_PER_ELEMENT if params is None else 1)
    _GRAD_SQ_NORMS[work >= PARALLEL_MIN_WORK](grads, np.asarray(offsets, dtype=np.int64), clip_value, out, acc,
                                              params, seg_l1, seg_l2, bool(l1_in_gradient), total)


def sgd(params, grads, momentum_buf, offsets, seg_scale, seg_decay, clip_value, seg_l1, l1_rule,
        lr, momentum, dampening, nesterov, decoupled, first_step, status=None, diag=None):
    _run(_SGD, params, grads, momentum_buf, None, None, offsets, seg_scale, seg_decay, clip_value,
         seg_l1, l1_rule, lr, (lr, momentum, 1.0 - dampening),
         (momentum != 0.0, bool(nesterov), bool(first_step), bool(decoupled)), status, diag)


def adagrad(params, grads, state_sum, offsets, seg_scale, seg_decay, clip_value, seg_l1, l1_rule,
            lr, eps, status=None, diag=None):
    _run(_ADAGRAD, params, grads, state_sum, None, None, offsets, seg_scale, seg_decay,
         clip_value, seg_l1, l1_rule, lr, (lr, eps), (), status, diag)


def rmsprop(params, grads, square_avg, grad_avg, momentum_buf, offsets, seg_scale, seg_decay,
            clip_value, seg_l1, l1_rule, lr, alpha, eps, momentum, centered, status=None, diag=None):
    _run(_RMSPROP, params, grads, square_avg, grad_avg, momentum_buf, offsets, seg_scale,
         seg_decay, clip_value, seg_l1, l1_rule, lr, (lr, alpha, 1.0 - alpha, eps, momentum),
         (bool(centered), momentum > 0.0), status, diag)


def adadelta(params, grads, square_avg, acc_delta, offsets, seg_scale, seg_decay, clip_value,
             seg_l1, l1_rule, lr, rho, eps, status=None, diag=None):
    _run(_ADADELTA, params, grads, square_avg, acc_delta, None, offsets, seg_scale, seg_decay,
         clip_value, seg_l1, l1_rule, lr, (lr, rho, 1.0 - rho, eps), (), status, diag)


def adam(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, offsets, seg_scale, seg_decay,
         clip_value, seg_l1, l1_rule, lr, beta1, beta2, eps, step, decoupled, amsgrad, status=None,
         diag=None):
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    _run(_ADAM, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, offsets, seg_scale,
         seg_decay, clip_value, seg_l1, l1_rule, lr,
         (lr, beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps, lr / bias_correction1,
          1.0 / math.sqrt(bias_correction2)),
         (bool(decoupled), bool(amsgrad)), status, diag)


def nadam(params, grads, exp_avg, exp_avg_sq, offsets, seg_scale, seg_decay, clip_value, seg_l1,
          l1_rule, lr, beta1, beta2, eps, step, mu, mu_next, mu_product, status=None, diag=None):
    _run(_NADAM, params, grads, exp_avg, exp_avg_sq, None, offsets, seg_scale, seg_decay,
         clip_value, seg_l1, l1_rule, lr,
         (beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps, 1.0 - beta2**step,
          lr * (1.0 - mu) / (1.0 - mu_product), lr * mu_next / (1.0 - mu_product * mu_next)),
         (), status, diag)
