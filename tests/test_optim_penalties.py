"""engine.optim's SGDW and the L1 rule after the step (Optimizer.set_l1), on every backend,
through Optimizer.apply on a model's flat buffers (as the trainer calls it)."""
import math

import numpy as np
import pytest

import engine
from engine import optim
from kernels import spec


def bound(backend_name, optimizer, frozen=None):
    model = engine.MLP([3, 4, 2], seed=0, backend=backend_name, dtype="float64")
    if frozen is not None:
        model.freeze(frozen)
    optimizer.bind(model)
    return model


def apply(model, optimizer, grads):
    k = model._k
    segments = len(model._layout.segments)
    optimizer.apply(model._params, k.to_device(grads, np.float64), k.to_device(np.ones(segments), np.float64),
                    math.inf)
    return [w.copy() for w in model.get_weights()]


def test_sgdw_is_exported_and_named():
    assert engine.SGDW is optim.SGDW and "SGDW" in engine.__all__
    by_name = optim.get("sgdw")
    assert isinstance(by_name, optim.SGDW) and by_name.lr == 1e-2 and by_name.decoupled


def test_sgdw_step_against_torch(backend_name):
    """Two steps of SGDW(lr 0.1, momentum 0.9, weight_decay 0.05) against torch SGD with
    p.mul_(1 - lr wd) first; biases decay too (decay_bias=True, torch's default)."""
    torch = pytest.importorskip("torch")
    opt = engine.SGDW(lr=0.1, momentum=0.9, weight_decay=0.05)
    model = bound(backend_name, opt)
    rs = np.random.default_rng(0)
    steps = [rs.standard_normal(model.num_parameters) for _ in range(2)]
    tensors = [torch.tensor(w) for w in model.get_weights()]
    reference = torch.optim.SGD(tensors, lr=0.1, momentum=0.9)
    for g in steps:
        got = apply(model, opt, g)
        with torch.no_grad():
            for t in tensors:
                t.mul_(1 - 0.1 * 0.05)
        for t, piece in zip(tensors, np.split(g, model._layout.offsets[1:-1])):
            t.grad = torch.tensor(piece.reshape(t.shape))
        reference.step()
    for w, t in zip(got, tensors):
        np.testing.assert_allclose(w, t.numpy(), rtol=1e-13, atol=1e-15)


def test_sgdw_differs_from_sgd_with_momentum(backend_name):
    """With momentum the decoupled decay does not pass through the buffer: a second step
    tells SGDW from torch's coupled SGD."""
    rs = np.random.default_rng(1)
    grads = [rs.standard_normal(26) for _ in range(2)]
    results = []
    for cls in (engine.SGD, engine.SGDW):
        opt = cls(lr=0.1, momentum=0.9, weight_decay=0.5)
        model = bound(backend_name, opt)
        for g in grads:
            weights = apply(model, opt, g)
        results.append(weights[0])
    assert not np.allclose(results[0], results[1])


@pytest.mark.parametrize("rule", [spec.L1_CLIPPED, spec.L1_PROXIMAL])
def test_set_l1_applies_the_rule_to_the_weights(backend_name, rule):
    """set_l1 with l1 on W and 0 on biases: the weights as the rule says, biases as plain SGD;
    frozen layers (trained runs) keep theirs."""
    lr, l1 = 0.1, 2.0
    for frozen in (None, 1):
        opt = engine.SGD(lr=lr)
        model = bound(backend_name, opt, frozen)
        before = [w.copy() for w in model.get_weights()]
        seg_l1 = np.array([l1 if not s.is_vector else 0.0 for s in model._layout.segments])
        opt.set_l1(model._k.to_device(seg_l1, np.float64), rule)
        g = np.random.default_rng(2).standard_normal(model.num_parameters) * 0.1
        after = apply(model, opt, g)
        pieces = np.split(g, model._layout.offsets[1:-1])
        for i, (w0, w1, gi) in enumerate(zip(before, after, pieces)):
            if frozen is not None and i < 2:
                np.testing.assert_array_equal(w1, w0)
                continue
            stepped = w0 - lr * gi.reshape(w0.shape)
            t = lr * l1 if w0.ndim == 2 else 0.0
            if rule == spec.L1_CLIPPED:
                expected = stepped - np.minimum(t, np.abs(w0)) * np.sign(w0)
            else:
                expected = np.sign(stepped) * np.maximum(np.abs(stepped) - t, 0)
            np.testing.assert_allclose(w1, expected, rtol=1e-13, atol=1e-15)
        assert (after[-2] == 0).any() == (rule == spec.L1_PROXIMAL)  # lr l1 = 0.2 zeroes some


def test_set_l1_refuses_an_unknown_rule():
    opt = engine.SGD(lr=0.1)
    with pytest.raises(ValueError, match="rule"):
        opt.set_l1(None, 5)
    assert opt._l1_rule == spec.L1_GRADIENT
