"""Sample weights of kernels.reference's losses (Keras semantics) against PyTorch: torch's
reduction="none" losses times the row weights, summed, and for MEAN divided by the
unweighted count (rows, elements, or kept rows); gradients by torch's autograd of that
and by finite differences in float64. Without weights the outputs are bit for bit the
unweighted ones."""
import numpy as np
import pytest

import kernels.reference as ref
from finite_differences import central_diff
from kernels import spec

torch = pytest.importorskip("torch")
F = torch.nn.functional

REDUCTIONS = {"none": spec.NONE, "mean": spec.MEAN, "sum": spec.SUM}
FD_RTOL, FD_ATOL = 1e-6, 1e-7  # as tests/test_reference_losses.py (its error budget)
TORCH_TOL = dict(rtol=1e-12, atol=1e-13)  # float64, two implementations of one formula


def torch_weighted(per_sample, weights, count, reduction):
    """Keras: the weighted per-sample losses, summed, and for MEAN divided by ``count``."""
    shape = (-1,) + (1,) * (per_sample.dim() - 1)
    weighted = per_sample * torch.as_tensor(weights).reshape(shape)
    total = weighted.sum()
    return weighted, total / count if reduction == spec.MEAN else total


def check_against_torch(op, pred, weights, reduction, torch_losses, count):
    """op(pred, reduction, losses, grad, weights) against torch's per-sample losses
    ``torch_losses(x)`` weighted, and against finite differences of its own value."""
    x = torch.tensor(pred, requires_grad=True)
    weighted, value = torch_weighted(torch_losses(x), weights, count, reduction)
    value.backward()
    losses, grad = np.full(weighted.shape, np.nan), np.full(pred.shape, np.nan)
    got = op(pred, reduction, losses, grad, weights)
    assert got == pytest.approx(value.item(), rel=1e-12, abs=1e-13)
    np.testing.assert_allclose(losses, weighted.detach().numpy(), **TORCH_TOL)
    np.testing.assert_allclose(grad, x.grad.numpy(), **TORCH_TOL)
    numeric = central_diff(lambda: op(pred, reduction, None, None, weights), pred)
    np.testing.assert_allclose(grad, numeric, rtol=FD_RTOL, atol=FD_ATOL)


def row_weights(n, seed):
    """Positive weights, a zero, and one large: what class and sample weights look like."""
    w = np.random.default_rng(seed).uniform(0.1, 3.0, n)
    w[0] = 0.0
    w[-1] = 10.0
    return w


@pytest.mark.parametrize("reduction", REDUCTIONS.values(), ids=REDUCTIONS.keys())
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("ignore_index", [spec.NO_IGNORE, -100])
def test_cross_entropy_class_targets(reduction, smoothing, ignore_index):
    g = np.random.default_rng(1)
    logits, y = g.normal(scale=2.0, size=(9, 5)), g.integers(0, 5, 9)
    if ignore_index != spec.NO_IGNORE:
        y[[2, 5]] = ignore_index
    kept = int((y != ignore_index).sum())
    w = row_weights(9, 2)

    def torch_losses(x):
        return F.cross_entropy(x, torch.tensor(y), reduction="none", label_smoothing=smoothing,
                               ignore_index=int(ignore_index) if ignore_index != spec.NO_IGNORE else -(2**62))

    def op(pred, red, losses, grad, weights):
        return ref.softmax_cross_entropy(pred, y, smoothing, ignore_index, red, losses, grad, None, weights)
    check_against_torch(op, logits, w, reduction, torch_losses, kept)


@pytest.mark.parametrize("reduction", REDUCTIONS.values(), ids=REDUCTIONS.keys())
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_distribution_targets(reduction, smoothing):
    g = np.random.default_rng(3)
    logits, targets = g.normal(size=(6, 4)), g.dirichlet(np.ones(4), size=6)
    w = row_weights(6, 4)

    def torch_losses(x):
        return F.cross_entropy(x, torch.tensor(targets), reduction="none", label_smoothing=smoothing)

    def op(pred, red, losses, grad, weights):
        return ref.softmax_cross_entropy(pred, targets, smoothing, spec.NO_IGNORE, red, losses, grad, None,
                                         weights)
    check_against_torch(op, logits, w, reduction, torch_losses, 6)


ELEMENTWISE = {
    "bce": (lambda p, t, *a: ref.binary_cross_entropy(p, t, *a),
            lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction="none")),
    "mse": (lambda p, t, *a: ref.mse(p, t, *a), lambda x, t: F.mse_loss(x, t, reduction="none")),
    "huber": (lambda p, t, *a: ref.huber(p, t, 0.7, *a),
              lambda x, t: F.huber_loss(x, t, reduction="none", delta=0.7)),
}


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", [(7, 3), (8, 1), (5,)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS.values(), ids=REDUCTIONS.keys())
def test_elementwise_losses(name, shape, reduction):
    """Row i's elements all take w_i; MEAN divides by all N K elements, as unweighted."""
    ours, theirs = ELEMENTWISE[name]
    g = np.random.default_rng(5)
    pred = g.normal(scale=2.0, size=shape)
    targets = g.uniform(size=shape) if name == "bce" else g.normal(size=shape)
    w = row_weights(shape[0], 6)

    def op(p, red, losses, grad, weights):
        return ours(p, targets, red, losses, grad, None, weights)
    check_against_torch(op, pred, w, reduction, lambda x: theirs(x, torch.tensor(targets)), pred.size)


def test_keras_mean_divides_by_rows_not_by_the_weights():
    """Weights 3 and 1 on losses 1 and 9: (3 + 9) / 2 rows, not / 4 (the weights' sum, as
    torch's class ``weight`` would)."""
    pred, targets = np.array([[1.0], [3.0]]), np.array([[0.0], [0.0]])
    assert ref.mse(pred, targets, spec.MEAN, None, None, None, np.array([3.0, 1.0])) == (3 * 1 + 9) / 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unit_weights_change_no_bit(dtype):
    g = np.random.default_rng(7)
    logits = g.normal(size=(11, 6)).astype(dtype)
    y = g.integers(0, 6, 11)
    calls = [lambda *a: ref.softmax_cross_entropy(logits, y, 0.1, spec.NO_IGNORE, *a),
             lambda *a: ref.mse(logits, logits[::-1].copy(), *a)]
    for call in calls:
        for reduction in REDUCTIONS.values():
            results = []
            for weights in (None, np.ones(11, dtype)):
                losses, grad = np.empty(11 if call is calls[0] else (11, 6), dtype), np.empty((11, 6), dtype)
                results.append((call(reduction, losses, grad, None, weights), losses.tobytes(), grad.tobytes()))
            assert results[0] == results[1]


def test_weights_must_match_the_rows_and_dtype():
    pred = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="weights"):
        ref.mse(pred, pred, spec.MEAN, None, None, None, np.ones(2, np.float32))
    with pytest.raises(TypeError, match="weights"):
        ref.mse(pred, pred, spec.MEAN, None, None, None, np.ones(4))
    with pytest.raises(TypeError, match="weights"):
        ref.mse(pred, pred, spec.MEAN, None, None, None, [1.0, 1.0, 1.0, 1.0])
