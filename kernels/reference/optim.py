"""Optimizer updates over flat buffers, in NumPy, torch formulas (see kernels.spec)."""
import math

import numpy as np

from .. import spec


def _per_element(values, offsets, dtype):
    """Expand one value per segment to one value per element."""
    return np.repeat(np.asarray(values, dtype=np.float64), np.diff(offsets)).astype(dtype)


def _effective_grad(grads, offsets, seg_scale, clip_value):
    return np.clip(grads, -clip_value, clip_value) * _per_element(seg_scale, offsets, grads.dtype)


def _skipped(status):
    """Whether guard_update's record says this update changes nothing."""
    return status is not None and status[spec.GUARD_SKIP] != 0


def _decay(params, offsets, seg_decay):
    return _per_element(seg_decay, offsets, params.dtype)


def _decayed_grad(params, grads, offsets, seg_scale, seg_decay, clip_value, lr, decoupled):
    """The gradient the step follows, with weight decay: decoupled (SGDW, AdamW) shrinks
    the parameters here, ``p *= 1 - lr wd``, and leaves g alone; coupled adds ``wd p``."""
    g = _effective_grad(grads, offsets, seg_scale, clip_value)
    wd = _decay(params, offsets, seg_decay)
    if decoupled:
        params *= 1.0 - lr * wd
        return g
    return g + wd * params


def _l1_after_step(params, before, offsets, seg_l1, l1_rule, lr):
    """kernels.spec's L1 rule after the step, on the stepped ``params`` (w) and the
    parameters ``before`` the update (w_old), with ``t = lr * seg_l1[s]``."""
    if seg_l1 is None or l1_rule == spec.L1_GRADIENT:
        return
    t = _per_element(lr * np.asarray(seg_l1, dtype=np.float64), offsets, params.dtype)
    if l1_rule == spec.L1_CLIPPED:
        params -= np.minimum(t, np.abs(before)) * np.sign(before)
    else:
        params[...] = np.sign(params) * np.maximum(np.abs(params) - t, 0)


def _start(params, status, diag, seg_l1, l1_rule):
    """Whether the update runs (guard_update's record) and, if so, a copy of the parameters
    before it where the diagnostics or the L1 rule need one (else None)."""
    if l1_rule not in (spec.L1_GRADIENT, spec.L1_CLIPPED, spec.L1_PROXIMAL):
        raise ValueError(f"l1_rule must be L1_GRADIENT, L1_CLIPPED or L1_PROXIMAL (0, 1, 2); got {l1_rule!r}")
    if _skipped(status):
        return False, None
    keep = diag is not None or (seg_l1 is not None and l1_rule == spec.L1_CLIPPED)
    return True, params.copy() if keep else None


def _finish(params, before, offsets, seg_l1, l1_rule, lr, diag):
    """The L1 rule after the step, then the update's diagnostics."""
    _l1_after_step(params, before, offsets, seg_l1, l1_rule, lr)
    _tally(diag, before, params, offsets)


def _tally(diag, before, params, offsets):
    """The update's diagnostics of kernels.spec: ``diag[s] += (sum (p' - p)^2, sum p^2)``
    over segment s, in float64, p the parameters ``before`` the update and p' after."""
    if diag is None:
        return
    old = before.astype(np.float64)
    change = params.astype(np.float64) - old
    for s in range(len(offsets) - 1):
        piece = slice(offsets[s], offsets[s + 1])
        diag[s, 0] += np.dot(change[piece], change[piece])
        diag[s, 1] += np.dot(old[piece], old[piece])


def grad_sq_norms(grads, offsets, clip_value, out, acc=None, params=None, seg_l1=None,
                  seg_l2=None, l1_in_gradient=True, total=None):
    if params is not None:
        _add_penalty(grads, params, offsets, seg_l1, seg_l2, l1_in_gradient, total)
    g = np.clip(grads, -clip_value, clip_value).astype(np.float64)
    for s in range(len(offsets) - 1):
        out[s] = np.dot(g[offsets[s]:offsets[s + 1]], g[offsets[s]:offsets[s + 1]])
    if acc is not None:
        acc += out


def _add_penalty(grads, params, offsets, seg_l1, seg_l2, l1_in_gradient, total):
    """grad_sq_norms' L2 and L1 penalty (kernels.spec): its gradient into ``grads``, its
    value added to ``total[0]`` unless ``total`` is None."""
    if seg_l1 is None or seg_l2 is None:
        raise ValueError("seg_l1, seg_l2: (S,) float64 arrays are required with params")
    dtype = grads.dtype
    penalty = grads + _per_element(seg_l2, offsets, dtype) * params
    if l1_in_gradient:
        penalty = penalty + _per_element(seg_l1, offsets, dtype) * np.sign(params)
    grads[...] = penalty
    if total is not None:
        p = params.astype(np.float64)
        value = 0.0
        for s in range(len(offsets) - 1):
            piece = p[offsets[s]:offsets[s + 1]]
            value += seg_l2[s] / 2 * np.dot(piece, piece) + seg_l1[s] * np.abs(piece).sum()
        total[0] += value


def sgd(params, grads, momentum_buf, offsets, seg_scale, seg_decay, clip_value, seg_l1, l1_rule,
        lr, momentum, dampening, nesterov, decoupled, first_step, status=None, diag=None):
    run, before = _start(params, status, diag, seg_l1, l1_rule)
    if not run:
        return
    g = _decayed_grad(params, grads, offsets, seg_scale, seg_decay, clip_value, lr, decoupled)
    if momentum != 0.0:
        if first_step:
            momentum_buf[...] = g
        else:
            momentum_buf[...] = momentum * momentum_buf + (1.0 - dampening) * g
        g = g + momentum * momentum_buf if nesterov else momentum_buf
    params -= lr * g
    _finish(params, before, offsets, seg_l1, l1_rule, lr, diag)


def adagrad(params, grads, state_sum, offsets, seg_scale, seg_decay, clip_value, seg_l1, l1_rule,
            lr, eps, status=None, diag=None):
    run, before = _start(params, status, diag, seg_l1, l1_rule)
    if not run:
        return
    g = _decayed_grad(params, grads, offsets, seg_scale, seg_decay, clip_value, lr, False)
    state_sum += g * g
    params -= lr * g / (np.sqrt(state_sum) + eps)
    _finish(params, before, offsets, seg_l1, l1_rule, lr, diag)


def rmsprop(params, grads, square_avg, grad_avg, momentum_buf, offsets, seg_scale, seg_decay,
            clip_value, seg_l1, l1_rule, lr, alpha, eps, momentum, centered, status=None, diag=None):
    run, before = _start(params, status, diag, seg_l1, l1_rule)
    if not run:
        return
    g = _decayed_grad(params, grads, offsets, seg_scale, seg_decay, clip_value, lr, False)
    square_avg[...] = alpha * square_avg + (1.0 - alpha) * g * g
    if centered:
        grad_avg[...] = alpha * grad_avg + (1.0 - alpha) * g
        avg = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = np.sqrt(square_avg) + eps
    if momentum > 0.0:
        momentum_buf[...] = momentum * momentum_buf + g / avg
        params -= lr * momentum_buf
    else:
        params -= lr * g / avg
    _finish(params, before, offsets, seg_l1, l1_rule, lr, diag)


def adadelta(params, grads, square_avg, acc_delta, offsets, seg_scale, seg_decay, clip_value,
             seg_l1, l1_rule, lr, rho, eps, status=None, diag=None):
    run, before = _start(params, status, diag, seg_l1, l1_rule)
    if not run:
        return
    g = _decayed_grad(params, grads, offsets, seg_scale, seg_decay, clip_value, lr, False)
    square_avg[...] = rho * square_avg + (1.0 - rho) * g * g
    delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
    acc_delta[...] = rho * acc_delta + (1.0 - rho) * delta * delta
    params -= lr * delta
    _finish(params, before, offsets, seg_l1, l1_rule, lr, diag)


def adam(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, offsets, seg_scale, seg_decay,
         clip_value, seg_l1, l1_rule, lr, beta1, beta2, eps, step, decoupled, amsgrad, status=None,
         diag=None):
    run, before = _start(params, status, diag, seg_l1, l1_rule)
    if not run:
        return
    g = _decayed_grad(params, grads, offsets, seg_scale, seg_decay, clip_value, lr, decoupled)
    exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1.0 - beta2) * g * g
    v_hat = exp_avg_sq
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v_hat = max_exp_avg_sq
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    denom = np.sqrt(v_hat) / math.sqrt(bias_correction2) + eps
    params -= lr / bias_correction1 * exp_avg / denom
    _finish(params, before, offsets, seg_l1, l1_rule, lr, diag)


def nadam(params, grads, exp_avg, exp_avg_sq, offsets, seg_scale, seg_decay, clip_value, seg_l1,
          l1_rule, lr, beta1, beta2, eps, step, mu, mu_next, mu_product, status=None, diag=None):
    run, before = _start(params, status, diag, seg_l1, l1_rule)
    if not run:
        return
    g = _decayed_grad(params, grads, offsets, seg_scale, seg_decay, clip_value, lr, False)
    exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1.0 - beta2) * g * g
    denom = np.sqrt(exp_avg_sq / (1.0 - beta2**step)) + eps
    params -= lr * (1.0 - mu) / (1.0 - mu_product) * g / denom
    params -= lr * mu_next / (1.0 - mu_product * mu_next) * exp_avg / denom
    _finish(params, before, offsets, seg_l1, l1_rule, lr, diag)
