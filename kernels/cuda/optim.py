"""Optimizer updates and gradient norms over the flat parameter buffer (see kernels.spec).

Each update is one kernel launch over the whole buffer (optim.cu): every element finds its
segment in ``offsets`` on the device and applies the formulas of ``optim_math.cuh`` in the
dtype, with every constant rounded to it first and in the reference's order, so results
agree with kernels.reference as the CPU backend's do. The constants are computed here
as Python floats (in double, as the reference computes them) and passed as NumPy scalars
of the kernel's parameter type T. With ``status``, the kernel reads
``status[GUARD_SKIP]`` itself and returns at once when the step is skipped: nothing here
waits for the device.

:func:`grad_sq_norms` is deterministic: a fixed number of blocks for a given buffer
length, each summing its chunk in a fixed order into per-(block, segment) partials, then
one pass adding each segment's partials in block order. Its partials live in a scratch
buffer kept per device and size, so the steady state allocates nothing. An update with
``diag`` (kernels.spec) runs the same kernel in that layout instead of its grid-stride
loop, its sums summed the same way into ``diag`` by a second, small kernel.

``offsets``, ``seg_scale`` and ``seg_decay`` may also be NumPy arrays (copied to the
device, which waits for the copy: the engine passes device arrays); updated arrays that
are not contiguous are updated through contiguous copies.
"""
import math

import cupy
import numpy as np

from ..spec import GUARD_SKIP, L1_CLIPPED, L1_GRADIENT, L1_PROXIMAL
from .compiler import VECTOR_BYTES, Source, instances, scalar

_UPDATES = ("sgd_step", "adagrad_step", "rmsprop_step", "adadelta_step", "adam_step", "nadam_step")
_SOURCE = Source("optim.cu", [name for kernel in _UPDATES + ("sq_norm_partials",)
                              for name in instances(kernel)]
                 + ["sq_norm_totals", "update_tally_totals"])

THREADS = 256  # per block, every kernel here (a power of two, as block_sum needs)
MAX_UPDATE_BLOCKS = 8192  # the update's grid-stride loop covers the rest
MAX_NORM_BLOCKS = 1024  # partial sums per segment at most, whatever the buffer length
MIN_NORM_CHUNK = 16 * THREADS  # elements per norm block: 16 per thread at the least

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_partials = {}  # (device id, length) -> float64 scratch of the partial sums (_scratch)


# ----------------------------------------------------------------------- arguments
def _device_array(value, name, dtype=None, size=None, from_host=False):
    """``value``, a 1-D CuPy array of ``dtype`` (None: float32 or float64) and ``size``,
    checked; with ``from_host``, a NumPy array of that dtype is copied to the device."""
    if from_host and isinstance(value, np.ndarray) and value.dtype == dtype:
        value = cupy.asarray(value)
    if not isinstance(value, cupy.ndarray):
        raise TypeError(f"{name} must be a CuPy array; got {type(value).__name__}")
    if dtype is None and value.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float32 or float64; got {value.dtype}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name} must be {np.dtype(dtype)}; got {value.dtype}")
    if value.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {value.shape}")
    if size is not None and value.size != size:
        raise ValueError(f"{name} must have {size} elements; got {value.size}")
    return value


def _offsets(offsets, n):
    """offsets (S + 1,) int64 for a buffer of n elements: at least one segment unless n == 0
    (the values stay on the device, unread)."""
    offsets = _device_array(offsets, "offsets", np.int64, from_host=True)
    if offsets.size < (2 if n else 1):
        raise ValueError(f"offsets must hold S + 1 entries, S >= 1 for {n} elements; "
                         f"got {offsets.size}")
    return cupy.ascontiguousarray(offsets)


def _per_segment(values, name, offsets):
    return cupy.ascontiguousarray(
        _device_array(values, name, np.float64, offsets.size - 1, from_host=True))


def _skip_flag(status):
    """The kernels' ``skip``: status[GUARD_SKIP] (a one-element view), or None."""
    return None if status is None else status[GUARD_SKIP:GUARD_SKIP + 1]


def _l1_rule(seg_l1, l1_rule, lr):
    """The ops' L1 rule after the step as the kernels take it, (seg_l1, lr, rule): seg_l1
    None (and rule L1_GRADIENT) where no rule acts; ValueError for an unknown rule."""
    if l1_rule not in (L1_GRADIENT, L1_CLIPPED, L1_PROXIMAL):
        raise ValueError(f"l1_rule must be L1_GRADIENT, L1_CLIPPED or L1_PROXIMAL (0, 1, 2); got {l1_rule!r}")
    if seg_l1 is None or l1_rule == L1_GRADIENT:
        return None, lr, L1_GRADIENT
    return seg_l1, lr, l1_rule


def _update_args(params, grads, states, offsets, seg_scale, seg_decay, clip_value, l1, status,
                 floats, flags, aligned, partials=None, chunk=0):
    """The arguments of an update kernel: OPTIM_FLAT_PARAMS(T) of optim_math.cuh, then
    OPTIM_TALLY_PARAMS of optim.cu (``partials`` None without diagnostics) and the kernel's
    constants (T) and flags (int); ``states``: three arrays or None; ``l1``: the
    (seg_l1, lr, rule) of :func:`_l1_rule`."""
    dtype = params.dtype
    seg_l1, lr, rule = l1
    return ([params, grads, *states, offsets, np.int64(offsets.size - 1), seg_scale, seg_decay,
             np.int64(params.size), np.int32(aligned), _skip_flag(status), scalar(clip_value, dtype),
             seg_l1, np.float64(lr), np.int32(rule), partials, np.int64(chunk)]
            + [scalar(value, dtype) for value in floats] + [np.int32(bool(flag)) for flag in flags])


def _tally_args(partials, offsets, n, chunk, status, diag):
    """The arguments of update_tally_totals (optim.cu)."""
    return [partials, offsets, np.int64(offsets.size - 1), np.int64(n), np.int64(chunk),
            _skip_flag(status), diag]


def _diag_sums(diag, segments):
    """kernels.spec's ``diag``, checked: a (segments, 2) float64 CuPy array, or None."""
    if diag is None:
        return None
    if not isinstance(diag, cupy.ndarray) or diag.dtype != np.float64:
        raise TypeError(f"diag must be a float64 CuPy array; got {type(diag).__name__} "
                        f"{getattr(diag, 'dtype', '')}")
    if diag.shape != (segments, 2):
        raise ValueError(f"diag must have shape ({segments}, 2), a row per segment; got {diag.shape}")
    return diag


def _scratch(size):
    """A float64 scratch buffer of ``size`` entries kept per device and size (the partial
    sums of grad_sq_norms and of updates with diagnostics: ops of one stream, one at a time)."""
    key = (cupy.cuda.get_device_id(), size)
    partials = _partials.get(key)
    if partials is None:
        partials = _partials[key] = cupy.empty(size, np.float64)
    return partials


def _update(kernel, params, grads, states, offsets, seg_scale, seg_decay, clip_value, l1,
            status, floats, flags, diag):
    """Launch update ``kernel`` (``<op>_step``). ``states``: three (name, array) slots, None
    where the optimizer leaves one unused; ``l1``: the op's (seg_l1, l1_rule, lr);
    ``floats`` its constants, ``flags`` its booleans; ``diag``: kernels.spec's (S, 2) sums,
    or None."""
    params = _device_array(params, "params")
    n, dtype = params.size, params.dtype
    grads = cupy.ascontiguousarray(_device_array(grads, "grads", dtype, n))
    updated = [params] + [None if slot is None else _device_array(slot[1], slot[0], dtype, n)
                          for slot in states]
    offsets = _offsets(offsets, n)
    seg_scale = _per_segment(seg_scale, "seg_scale", offsets)
    seg_decay = _per_segment(seg_decay, "seg_decay", offsets)
    seg_l1, lr, rule = _l1_rule(*l1)
    l1 = (None if seg_l1 is None else _per_segment(seg_l1, "seg_l1", offsets), lr, rule)
    if status is not None:
        status = _device_array(status, "status", np.float64)
        if status.size <= GUARD_SKIP:
            raise ValueError("status must be the record of guard_update; got "
                             f"{status.size} entries")
    diag = _diag_sums(diag, offsets.size - 1)
    if n == 0:
        return
    work = [a if a is None or a.flags.c_contiguous else cupy.ascontiguousarray(a) for a in updated]
    aligned = all(a.data.ptr % VECTOR_BYTES == 0 for a in work + [grads] if a is not None)
    if diag is None:
        units = n // (VECTOR_BYTES // dtype.itemsize) if aligned else n
        blocks = min(max(1, -(-units // THREADS)), MAX_UPDATE_BLOCKS)
        _SOURCE.function(kernel, dtype)(
            (blocks,), (THREADS,),
            _update_args(work[0], grads, work[1:], offsets, seg_scale, seg_decay, clip_value, l1,
                         status, floats, flags, aligned))
    else:
        chunk, blocks = _norm_layout(n)
        segments = offsets.size - 1
        partials = _scratch(2 * (blocks + segments))
        target = diag if diag.flags.c_contiguous else cupy.ascontiguousarray(diag)
        _SOURCE.function(kernel, dtype)(
            (blocks,), (THREADS,),
            _update_args(work[0], grads, work[1:], offsets, seg_scale, seg_decay, clip_value, l1,
                         status, floats, flags, aligned, partials, chunk),
            shared_mem=THREADS * 8)
        _SOURCE.function("update_tally_totals")(
            (-(-segments // THREADS),), (THREADS,),
            _tally_args(partials, offsets, n, chunk, status, target))
        if target is not diag:
            diag[...] = target
    for original, copy in zip(updated, work):
        if copy is not original:
            original[...] = copy


# --------------------------------------------------------------------- the updates
# Each op's constants, in the order of its kernel's parameters after clip_value.
def _sgd_constants(lr, momentum, dampening, nesterov, decoupled, first_step):
    return (lr, momentum, 1.0 - dampening), (momentum != 0.0, nesterov, first_step, decoupled)


def _adagrad_constants(lr, eps):
    return (lr, eps), ()


def _rmsprop_constants(lr, alpha, eps, momentum, centered):
    return (lr, alpha, 1.0 - alpha, eps, momentum), (centered, momentum > 0.0)


def _adadelta_constants(lr, rho, eps):
    return (lr, rho, 1.0 - rho, eps), ()


def _adam_constants(lr, beta1, beta2, eps, step, decoupled, amsgrad):
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    return ((lr, beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps, lr / bias_correction1,
             math.sqrt(bias_correction2)), (decoupled, amsgrad))


def _nadam_constants(lr, beta1, beta2, eps, step, mu, mu_next, mu_product):
    return ((beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps, 1.0 - beta2**step,
             lr * (1.0 - mu) / (1.0 - mu_product), lr * mu_next / (1.0 - mu_product * mu_next)),
            ())


def sgd(params, grads, momentum_buf, offsets, seg_scale, seg_decay, clip_value, seg_l1, l1_rule,
        lr, momentum, dampening, nesterov, decoupled, first_step, status=None, diag=None):
    """torch SGD / SGDW (kernels.spec.Backend.sgd); ``momentum_buf`` may be None without
    momentum."""
    slot = ("momentum_buf", momentum_buf) if momentum != 0.0 else None
    _update("sgd_step", params, grads, (slot, None, None), offsets, seg_scale, seg_decay,
            clip_value, (seg_l1, l1_rule, lr), status,
            *_sgd_constants(lr, momentum, dampening, nesterov, decoupled, first_step), diag)


def adagrad(params, grads, state_sum, offsets, seg_scale, seg_decay, clip_value, seg_l1, l1_rule,
            lr, eps, status=None, diag=None):
    """torch Adagrad (kernels.spec.Backend.adagrad)."""
    _update("adagrad_step", params, grads, (("state_sum", state_sum), None, None), offsets,
            seg_scale, seg_decay, clip_value, (seg_l1, l1_rule, lr), status,
            *_adagrad_constants(lr, eps), diag)


def rmsprop(params, grads, square_avg, grad_avg, momentum_buf, offsets, seg_scale, seg_decay,
            clip_value, seg_l1, l1_rule, lr, alpha, eps, momentum, centered, status=None, diag=None):
    """torch RMSprop (kernels.spec.Backend.rmsprop); ``grad_avg`` may be None unless
    centered, ``momentum_buf`` without momentum."""
    slots = (("square_avg", square_avg), ("grad_avg", grad_avg) if centered else None,
             ("momentum_buf", momentum_buf) if momentum > 0.0 else None)
    _update("rmsprop_step", params, grads, slots, offsets, seg_scale, seg_decay, clip_value,
            (seg_l1, l1_rule, lr), status,
            *_rmsprop_constants(lr, alpha, eps, momentum, centered), diag)


def adadelta(params, grads, square_avg, acc_delta, offsets, seg_scale, seg_decay, clip_value,
             seg_l1, l1_rule, lr, rho, eps, status=None, diag=None):
    """torch Adadelta (kernels.spec.Backend.adadelta)."""
    _update("adadelta_step", params, grads, (("square_avg", square_avg), ("acc_delta", acc_delta),
                                             None),
            offsets, seg_scale, seg_decay, clip_value, (seg_l1, l1_rule, lr), status,
            *_adadelta_constants(lr, rho, eps), diag)


def adam(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, offsets, seg_scale, seg_decay,
         clip_value, seg_l1, l1_rule, lr, beta1, beta2, eps, step, decoupled, amsgrad, status=None,
         diag=None):
    """torch Adam / AdamW (kernels.spec.Backend.adam); ``max_exp_avg_sq`` is not touched
    (it may be None, or a stand-in such as ``exp_avg_sq``) without amsgrad."""
    slots = (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq),
             ("max_exp_avg_sq", max_exp_avg_sq) if amsgrad else None)
    _update("adam_step", params, grads, slots, offsets, seg_scale, seg_decay, clip_value,
            (seg_l1, l1_rule, lr), status,
            *_adam_constants(lr, beta1, beta2, eps, step, decoupled, amsgrad), diag)


def nadam(params, grads, exp_avg, exp_avg_sq, offsets, seg_scale, seg_decay, clip_value, seg_l1,
          l1_rule, lr, beta1, beta2, eps, step, mu, mu_next, mu_product, status=None, diag=None):
    """torch NAdam with the caller's momentum schedule (kernels.spec.Backend.nadam)."""
    _update("nadam_step", params, grads, (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq), None),
            offsets, seg_scale, seg_decay, clip_value, (seg_l1, l1_rule, lr), status,
            *_nadam_constants(lr, beta1, beta2, eps, step, mu, mu_next, mu_product), diag)


# ------------------------------------------------------------------ gradient norms
def _norm_layout(n):
    """(chunk, blocks) of grad_sq_norms over n elements: fixed by n alone, so the sums
    are made in the same order on every run and every device."""
    chunk = max(MIN_NORM_CHUNK, -(-n // MAX_NORM_BLOCKS))
    return chunk, -(-n // chunk)


def _norm_args(grads, offsets, clip_value, chunk, blocks, partials, out, acc=None, penalty=None):
    """The arguments of sq_norm_partials and of sq_norm_totals (optim.cu); ``penalty``:
    None, or (params, seg_l1, seg_l2, l1_in_gradient, total) with ``total`` None where the
    penalty's value is not wanted."""
    segments = np.int64(offsets.size - 1)
    params, seg_l1, seg_l2, l1_in_gradient, total = penalty or (None, None, None, False, None)
    return ([grads, offsets, segments, np.int64(grads.size), np.int64(chunk),
             scalar(clip_value, grads.dtype), partials, params, seg_l1, seg_l2,
             np.int32(bool(l1_in_gradient))],
            [partials, offsets, segments, np.int64(chunk), np.int64(blocks), out, acc,
             seg_l1, seg_l2, total])


def _penalty(grads, offsets, params, seg_l1, seg_l2, l1_in_gradient, total):
    """grad_sq_norms' penalty arguments, checked: None without ``params``."""
    if params is None:
        return None
    params = cupy.ascontiguousarray(_device_array(params, "params", grads.dtype, grads.size))
    if seg_l1 is None or seg_l2 is None:
        raise ValueError("seg_l1, seg_l2: (S,) float64 arrays are required with params")
    seg_l1 = _per_segment(seg_l1, "seg_l1", offsets)
    seg_l2 = _per_segment(seg_l2, "seg_l2", offsets)
    if total is not None:
        total = _device_array(total, "total", np.float64, 1)
    return params, seg_l1, seg_l2, bool(l1_in_gradient), total


def grad_sq_norms(grads, offsets, clip_value, out, acc=None, params=None, seg_l1=None, seg_l2=None,
                  l1_in_gradient=True, total=None):
    """``out[s] = sum_{i in s} clip(grads[i], -clip_value, clip_value)^2`` in float64, and
    ``acc[s] += out[s]`` when ``acc`` is given; with ``params``, the L2 / L1 penalty's
    gradient added to ``grads`` first and its value to ``total[0]``
    (kernels.spec.Backend.grad_sq_norms); the segment count comes from offsets' shape."""
    source = _device_array(grads, "grads")
    grads = cupy.ascontiguousarray(source)
    offsets = _offsets(offsets, grads.size)
    segments = offsets.size - 1
    out = _device_array(out, "out", np.float64, segments)
    if acc is not None:
        acc = _device_array(acc, "acc", np.float64, segments)
    penalty = _penalty(grads, offsets, params, seg_l1, seg_l2, l1_in_gradient, total)
    if segments == 0:
        return
    target = out if out.flags.c_contiguous else cupy.empty(segments, np.float64)
    acc_c = None if acc is None else cupy.ascontiguousarray(acc)
    chunk, blocks = _norm_layout(grads.size)
    partials = _scratch((1 if penalty is None else 3) * (blocks + segments))
    partial_args, total_args = _norm_args(grads, offsets, clip_value, chunk, blocks, partials,
                                          target, acc_c, penalty)
    if blocks:  # none for an empty buffer, whose segments are all empty: totals write 0
        _SOURCE.function("sq_norm_partials", grads.dtype)((blocks,), (THREADS,), partial_args,
                                                          shared_mem=THREADS * 8)
    _SOURCE.function("sq_norm_totals")((-(-segments // THREADS),), (THREADS,), total_args)
    if target is not out:
        out[...] = target
    if acc_c is not acc:
        acc[...] = acc_c
    if penalty is not None and grads is not source:
        source[...] = grads  # the penalty's gradient, written into a contiguous copy
