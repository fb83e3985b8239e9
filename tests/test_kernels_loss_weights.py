"""Sample weights of the fast backends' losses against kernels.reference (its weighted
losses are checked against torch in tests/test_reference_loss_weights.py): random and
awkward shapes, strided weights and predictions, both dtypes; without weights, or with
unit weights, the per-sample losses and the gradient are bit for bit the unweighted ones."""
import numpy as np
import pytest

from conftest import TOLERANCES
from kernels import spec
from test_kernels_dense import parallel_cpu  # noqa: F401  (a fixture)
from test_kernels_losses import (
    ELEMENT_LOSSES,
    REDUCTIONS,
    assert_loss_close,
    class_targets,
    element_inputs,
    logits_for,
    to_backend,
)

CE_SHAPES = [(1, 1), (7, 13), (33, 5), (1, 1000), (64, 10), (5, 1500)]
ELEMENT_SHAPES = [(1,), (1, 1), (7, 13), (1000,), (33, 5), (300, 70), (9000, 1)]


def weights_for(n, dtype, seed):
    """Weights in [0, 3) with a zero and a large one, of the dtype."""
    w = np.random.default_rng(seed).uniform(0.0, 3.0, n)
    w[0] = 0.0
    w[n // 2] = 25.0
    return w.astype(dtype)


def run_weighted(backend, op, pred, per_sample_shape, args, weights):
    """(value, losses, grad) of ``op(pred, *args, losses, grad, None, weights)`` on arrays
    of ``backend`` (args and weights already placed), the outputs on the host."""
    losses = backend.zeros(per_sample_shape, pred.dtype)
    grad = backend.zeros(pred.shape, pred.dtype)
    value = getattr(backend, op)(pred, *args, losses, grad, None, weights)
    return value, backend.to_host(losses), backend.to_host(grad)


def loss_case(name, shape, dtype, seed):
    """(op, arguments between the predictions and the outputs, per-sample shape) of loss
    ``name`` on predictions of ``shape``: class targets for softmax_cross_entropy."""
    n, k = shape
    if name == "softmax_cross_entropy":
        return name, (class_targets(n, k, seed=seed), 0.1, spec.NO_IGNORE, spec.MEAN), (n,)
    op, extra = ELEMENT_LOSSES[name]
    _, targets = element_inputs(op, shape, dtype, seed=seed)
    return op, (targets, *extra, spec.MEAN), shape


def compare(fast, ref, op, pred, per_sample_shape, args, weights, dtype, what):
    got = run_weighted(fast, op, *to_backend(fast, pred), per_sample_shape,
                       [fast.to_device(a, a.dtype) if isinstance(a, np.ndarray) else a for a in args],
                       None if weights is None else fast.to_device(weights, dtype))
    expected = run_weighted(ref, op, pred, per_sample_shape, args, weights)
    assert_loss_close(got, expected, dtype, what)
    return got


@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS.values(), ids=REDUCTIONS.keys())
@pytest.mark.parametrize("ignore_index", [spec.NO_IGNORE, 2])
def test_cross_entropy_class_targets(fast, ref, dtype, shape, reduction, ignore_index):
    n, k = shape
    logits = logits_for(shape, dtype, seed=n + k)
    targets = class_targets(n, k, seed=1, ignore_index=ignore_index, ignored=0.3)
    args = (targets, 0.1, ignore_index, reduction)
    compare(fast, ref, "softmax_cross_entropy", logits, (n,), args, weights_for(n, dtype, 2), dtype,
            f"{shape}")


@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS.values(), ids=REDUCTIONS.keys())
def test_cross_entropy_distribution_targets(fast, ref, dtype, shape, reduction):
    logits = logits_for(shape, dtype, seed=3)
    targets = np.random.default_rng(4).random(shape).astype(dtype)
    targets /= targets.sum(axis=1, keepdims=True)
    args = (targets, 0.0, spec.NO_IGNORE, reduction)
    compare(fast, ref, "softmax_cross_entropy", logits, (shape[0],), args, weights_for(shape[0], dtype, 5),
            dtype, f"{shape}")


@pytest.mark.parametrize("name", ELEMENT_LOSSES)
@pytest.mark.parametrize("shape", ELEMENT_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS.values(), ids=REDUCTIONS.keys())
def test_elementwise_losses(fast, ref, dtype, name, shape, reduction):
    op, extra = ELEMENT_LOSSES[name]
    pred, targets = element_inputs(op, shape, dtype, seed=shape[0])
    compare(fast, ref, op, pred, shape, (targets, *extra, reduction), weights_for(shape[0], dtype, 6),
            dtype, f"{name} {shape}")


@pytest.mark.parametrize("name", ["softmax_cross_entropy", *ELEMENT_LOSSES])
def test_strided_weights_and_predictions(fast, ref, dtype, name):
    """Weights every other element of a longer array, predictions every other row."""
    n, k = 40, 6
    wide = logits_for((2 * n, k + 3), dtype, seed=8)
    w_wide = weights_for(2 * n, dtype, 9)
    op, args, per_sample = loss_case(name, (n, k), dtype, seed=10)
    placed = [fast.to_device(a, a.dtype) if isinstance(a, np.ndarray) else a for a in args]
    got = run_weighted(fast, op, fast.to_device(wide, dtype)[::2, 1:k + 1], per_sample, placed,
                       fast.to_device(w_wide, dtype)[::2])
    expected = run_weighted(ref, op, np.ascontiguousarray(wide[::2, 1:k + 1]), per_sample, args,
                            np.ascontiguousarray(w_wide[::2]))
    assert_loss_close(got, expected, dtype, f"{name} strided")


@pytest.mark.parametrize("name", ["softmax_cross_entropy", *ELEMENT_LOSSES])
def test_unit_weights_and_no_weights_agree(fast, dtype, name):
    """w = 1 multiplies exactly: the per-sample losses and the gradient have the bits of
    weights=None; the total agrees to rounding (the numba kernels add a weighted array's
    elements row by row, an order that may differ in the last bit)."""
    n, k = 37, 11
    logits = logits_for((n, k), dtype, seed=12)
    op, args, per_sample = loss_case(name, (n, k), dtype, seed=13)
    placed = [fast.to_device(a, a.dtype) if isinstance(a, np.ndarray) else a for a in args]
    x = fast.to_device(logits, dtype)
    plain = run_weighted(fast, op, x, per_sample, placed, None)
    unit = run_weighted(fast, op, x, per_sample, placed, fast.to_device(np.ones(n, dtype), dtype))
    np.testing.assert_array_equal(unit[1], plain[1])
    np.testing.assert_array_equal(unit[2], plain[2])
    np.testing.assert_allclose(unit[0], plain[0], **TOLERANCES[dtype])


def test_total_on_the_device_with_weights(fast, ref, dtype):
    """``total`` given: the weighted reduced loss lands in total[0] and the op returns None."""
    logits = logits_for((20, 4), dtype, seed=15)
    targets = class_targets(20, 4, seed=16)
    w = weights_for(20, dtype, 17)
    total = fast.zeros(1, np.float64)
    result = fast.softmax_cross_entropy(*to_backend(fast, logits, targets), 0.0, spec.NO_IGNORE, spec.MEAN,
                                        None, None, total, fast.to_device(w, dtype))
    assert result is None
    expected = ref.softmax_cross_entropy(logits, targets, 0.0, spec.NO_IGNORE, spec.MEAN, None, None, None, w)
    np.testing.assert_allclose(fast.to_host(total)[0], expected, **TOLERANCES[dtype])


def test_bad_weights_are_refused(fast):
    pred = fast.to_device(np.zeros((4, 3), np.float32), np.float32)
    with pytest.raises(ValueError, match="weights"):
        fast.mse(pred, pred, spec.MEAN, None, None, None, fast.to_device(np.ones(3, np.float32), np.float32))
    with pytest.raises(TypeError, match="weights"):
        fast.huber(pred, pred, 1.0, spec.MEAN, None, None, None, fast.to_device(np.ones(4), np.float64))
    targets = fast.to_device(np.zeros(4, np.int64), np.int64)
    with pytest.raises(ValueError, match="weights"):
        fast.softmax_cross_entropy(pred, targets, 0.0, spec.NO_IGNORE, spec.MEAN, None, None, None,
                                   fast.to_device(np.ones(5, np.float32), np.float32))


@pytest.mark.parametrize("name", ["softmax_cross_entropy", *ELEMENT_LOSSES])
def test_parallel_kernels(parallel_cpu, ref, name):
    """The numba backend's parallel (prange) kernels with weights, float32."""
    dtype = np.float32
    n, k = 301, 17
    logits = logits_for((n, k), dtype, seed=18)
    op, args, per_sample = loss_case(name, (n, k), dtype, seed=19)
    w = weights_for(n, dtype, 21)
    got = run_weighted(parallel_cpu, op, logits, per_sample, args, w)
    expected = run_weighted(ref, op, logits, per_sample, args, w)
    assert_loss_close(got, expected, dtype, f"{name} parallel")
