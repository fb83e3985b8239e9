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


def grad_sq_norms(grads, offsets, clip_value, out, acc=None):
    g = np.clip(grads, -clip_value, clip_value).astype(np.float64)
    for s in range(len(offsets) - 1):
        out[s] = np.dot(g[offsets[s]:offsets[s + 1]], g[offsets[s]:offsets[s + 1]])
    if acc is not None:
        acc += out


def sgd(params, grads, momentum_buf, offsets, seg_scale, seg_decay, clip_value,
        lr, momentum, dampening, nesterov, first_step, status=None, diag=None):
    if _skipped(status):
        return
    before = None if diag is None else params.copy()
    g = _effective_grad(grads, offsets, seg_scale, clip_value) + _decay(params, offsets, seg_decay) * params
    if momentum != 0.0:
        if first_step:
            momentum_buf[...] = g
        else:
            momentum_buf[...] = momentum * momentum_buf + (1.0 - dampening) * g
        g = g + momentum * momentum_buf if nesterov else momentum_buf
    params -= lr * g
    _tally(diag, before, params, offsets)


def adagrad(params, grads, state_sum, offsets, seg_scale, seg_decay, clip_value, lr, eps,
            status=None, diag=None):
    if _skipped(status):
        return
    before = None if diag is None else params.copy()
    g = _effective_grad(grads, offsets, seg_scale, clip_value) + _decay(params, offsets, seg_decay) * params
    state_sum += g * g
    params -= lr * g / (np.sqrt(state_sum) + eps)
    _tally(diag, before, params, offsets)


def rmsprop(params, grads, square_avg, grad_avg, momentum_buf, offsets, seg_scale, seg_decay,
            clip_value, lr, alpha, eps, momentum, centered, status=None, diag=None):
    if _skipped(status):
        return
    before = None if diag is None else params.copy()
    g = _effective_grad(grads, offsets, seg_scale, clip_value) + _decay(params, offsets, seg_decay) * params
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
    _tally(diag, before, params, offsets)


def adadelta(params, grads, square_avg, acc_delta, offsets, seg_scale, seg_decay, clip_value,
             lr, rho, eps, status=None, diag=None):
    if _skipped(status):
        return
    before = None if diag is None else params.copy()
    g = _effective_grad(grads, offsets, seg_scale, clip_value) + _decay(params, offsets, seg_decay) * params
    square_avg[...] = rho * square_avg + (1.0 - rho) * g * g
    delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
    acc_delta[...] = rho * acc_delta + (1.0 - rho) * delta * delta
    params -= lr * delta
    _tally(diag, before, params, offsets)


def adam(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, offsets, seg_scale, seg_decay,
         clip_value, lr, beta1, beta2, eps, step, decoupled, amsgrad, status=None, diag=None):
    if _skipped(status):
        return
    before = None if diag is None else params.copy()
    g = _effective_grad(grads, offsets, seg_scale, clip_value)
    wd = _decay(params, offsets, seg_decay)
    if decoupled:
        params *= 1.0 - lr * wd
    else:
        g = g + wd * params
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
    _tally(diag, before, params, offsets)


def nadam(params, grads, exp_avg, exp_avg_sq, offsets, seg_scale, seg_decay, clip_value,
          lr, beta1, beta2, eps, step, mu, mu_next, mu_product, status=None, diag=None):
    if _skipped(status):
        return
    before = None if diag is None else params.copy()
    g = _effective_grad(grads, offsets, seg_scale, clip_value) + _decay(params, offsets, seg_decay) * params
    exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1.0 - beta2) * g * g
    denom = np.sqrt(exp_avg_sq / (1.0 - beta2**step)) + eps
    params -= lr * (1.0 - mu) / (1.0 - mu_product) * g / denom
    params -= lr * mu_next / (1.0 - mu_product * mu_next) * exp_avg / denom
    _tally(diag, before, params, offsets)
