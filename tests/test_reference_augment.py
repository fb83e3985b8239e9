"""kernels.reference augmentation ops against their formulas, written independently: the
noise's hash (tests/test_cuda_host_dense.py's, in Python integers) and Box-Muller in Python floats, its statistics over 10^6
draws (mean, deviation, a Kolmogorov-Smirnov test against the normal), its keys;
mixup of rows and of class targets on hand-computed examples."""
import math

import numpy as np
import pytest

import kernels.reference as ref
from kernels import rng
from kernels.reference import rng as reference_rng
from test_cuda_host_dense import python_word


def python_normal(index, key):
    key_lo, key_hi = key % 2**32, key >> 32
    u1 = (python_word(index, key_lo, key_hi) + 1) / 2**32
    u2 = python_word(index, key_lo, key_hi ^ rng.NOISE_SECOND_STREAM) / 2**32
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)


# ----------------------------------------------------------------------- noise keys
def test_noise_keys_are_no_dropout_keys_and_differ_by_step():
    seeds, steps, layers = (0, 1, 12345), range(500), range(16)
    noise = {rng.noise_key(seed, step) for seed in seeds for step in steps}
    dropout = {rng.dropout_key(seed, step, layer) for seed in seeds for step in steps for layer in layers}
    assert len(noise) == len(seeds) * len(steps)  # one key per (seed, step)
    assert not noise & dropout
    assert all(0 <= key < 2**64 for key in noise)


# --------------------------------------------------------------------------- noise
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_noise_is_x_plus_std_times_the_documented_normal(dtype):
    key = rng.noise_key(7, 3)
    X = np.random.default_rng(0).standard_normal((13, 9)).astype(dtype)
    out = np.empty_like(X)
    ref.gaussian_noise(X, 0.25, key, out)
    z = np.array([python_normal(e, key) for e in range(X.size)]).reshape(X.shape)
    expected = X + dtype(0.25) * z.astype(dtype)  # z and std rounded, then in the dtype
    np.testing.assert_array_equal(out, expected)


def test_noise_in_place_and_on_a_strided_array_follows_positions_not_memory():
    key = rng.noise_key(1, 1)
    base = np.zeros((6, 10))
    ref.gaussian_noise(base, 1.0, key, base)  # in place: out is X
    expected = np.array([python_normal(e, key) for e in range(60)]).reshape(6, 10)
    np.testing.assert_allclose(base, expected, rtol=1e-15, atol=0)
    strided = np.zeros((6, 20))[:, ::2]
    ref.gaussian_noise(strided, 1.0, key, strided)
    np.testing.assert_array_equal(strided, base)


def test_noise_of_a_shard_under_offset_key_is_that_rows_noise():
    """A data-parallel rank holding rows r0.. draws with offset_key(key, r0 * width)."""
    key = rng.noise_key(3, 9)
    whole = np.zeros((8, 5))
    ref.gaussian_noise(whole, 1.0, key, whole)
    shard = np.zeros((3, 5))
    ref.gaussian_noise(shard, 1.0, rng.offset_key(key, 5 * 5), shard)
    np.testing.assert_array_equal(shard, whole[5:])


def test_noise_statistics_over_a_million_draws():
    """Mean 0 and deviation 1 within 5 standard errors (1/sqrt(n), 1/sqrt(2n)), the
    Kolmogorov-Smirnov distance to N(0, 1) of a normal sample's size, neighbours and the
    two words uncorrelated. The draws are fixed by the key: the test cannot flake."""
    n = 10**6
    z = np.zeros(n)
    ref.gaussian_noise(z, 1.0, rng.noise_key(2024, 1), z)
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.std() - 1) < 5 / math.sqrt(2 * n)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 5 / math.sqrt(n)
    assert abs(np.mean(z**4) - 3) < 5 * math.sqrt(96 / n)  # kurtosis of a normal; var(z^4) = 96
    stats = pytest.importorskip("scipy.stats", reason="the KS test needs scipy (scikit-learn's dependency)")
    assert stats.kstest(z, "norm").pvalue > 1e-3
    h1, h2 = reference_rng.noise_words(n, rng.noise_key(2024, 1))
    assert abs(np.corrcoef(h1.astype(float), h2.astype(float))[0, 1]) < 5 / math.sqrt(n)


def test_noise_scales_with_std_and_changes_with_the_key():
    X = np.zeros(1000)
    a, b, c = (np.empty_like(X) for _ in range(3))
    ref.gaussian_noise(X, 1.0, 11, a)
    ref.gaussian_noise(X, 3.0, 11, b)
    ref.gaussian_noise(X, 1.0, 12, c)
    np.testing.assert_allclose(b, 3 * a, rtol=1e-15)
    assert np.mean(a == c) < 0.01


def test_noise_refuses_a_mismatched_out():
    X = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="out"):
        ref.gaussian_noise(X, 1.0, 0, np.zeros((4, 3), np.float32))
    with pytest.raises(TypeError, match="out"):
        ref.gaussian_noise(X, 1.0, 0, np.zeros((3, 4)))


# -------------------------------------------------------------------------- mixup
def test_mix_rows_by_hand():
    src = np.array([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]])
    perm = np.array([2, 0, 1])
    out = np.empty_like(src)
    ref.mix_rows(src, perm, 0.75, out)
    np.testing.assert_array_equal(out, [[0.75 + 25.0, 1.5 + 50.0], [7.5 + 0.25, 15.0 + 0.5],
                                        [75.0 + 2.5, 150.0 + 5.0]])


def test_mix_rows_rounds_each_factor_and_term_in_the_dtype():
    src = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    perm = np.array([4, 3, 2, 1, 0])
    out = np.empty_like(src)
    lam = 0.3
    ref.mix_rows(src, perm, lam, out)
    left, right = np.float32(lam), np.float32(1 - lam)
    np.testing.assert_array_equal(out, left * src + right * src[perm])


def test_mix_rows_of_a_vector_and_a_partner_outside_the_batch():
    """(N,) rows (the row weights of a loss) mix too; perm outside [0, N) adds nothing."""
    w = np.array([1.0, 2.0, 4.0])
    out = np.empty_like(w)
    ref.mix_rows(w, np.array([1, -1, 3]), 0.5, out)
    np.testing.assert_array_equal(out, [1.5, 1.0, 2.0])


def test_mix_rows_refuses_overlapping_arrays_and_bad_perm():
    src = np.zeros((4, 3))
    with pytest.raises(ValueError, match="overlap"):
        ref.mix_rows(src, np.arange(4), 0.5, src)
    with pytest.raises(ValueError, match="overlap"):
        ref.mix_rows(src[:, :2], np.arange(4), 0.5, src[:, 1:])
    with pytest.raises(TypeError, match="perm"):
        ref.mix_rows(src, np.arange(4, dtype=np.int32), 0.5, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="perm"):
        ref.mix_rows(src, np.arange(3), 0.5, np.zeros((4, 3)))


def test_mix_class_targets_by_hand():
    targets = np.array([0, 2, 2, 1])
    perm = np.array([1, 2, 0, 3])
    out = np.full((4, 3), np.nan)
    ref.mix_class_targets(targets, perm, 0.7, 3, out)
    np.testing.assert_allclose(out, [[0.7, 0.0, 0.3], [0.0, 0.0, 1.0], [0.3, 0.0, 0.7],
                                     [0.0, 1.0, 0.0]], rtol=0, atol=1e-16)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mix_class_targets_is_mix_rows_of_the_one_hot_rows(dtype):
    g = np.random.default_rng(2)
    targets = g.integers(0, 5, 40)
    perm = g.permutation(40)
    out, expected = np.empty((40, 5), dtype), np.empty((40, 5), dtype)
    ref.mix_class_targets(targets, perm, 0.137, 5, out)
    ref.mix_rows(np.eye(5, dtype=dtype)[targets], perm, 0.137, expected)
    np.testing.assert_array_equal(out, expected)


def test_mix_class_targets_zero_rows_for_classes_outside():
    targets = np.array([-100, 1, 5])
    out = np.empty((3, 3))
    ref.mix_class_targets(targets, np.array([1, 0, 7]), 0.25, 3, out)
    np.testing.assert_array_equal(out, [[0.0, 0.75, 0.0], [0.0, 0.25, 0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="out"):
        ref.mix_class_targets(targets, np.arange(3), 0.5, 4, out)


def test_mixed_targets_feed_cross_entropy_as_the_mixed_losses():
    """CE with a mixture lam e_a + (1 - lam) e_b is lam CE(a) + (1 - lam) CE(b): what mixup
    trains on (Zhang et al. 2018)."""
    g = np.random.default_rng(3)
    logits, targets, perm = g.standard_normal((6, 4)), g.integers(0, 4, 6), g.permutation(6)
    mixed = np.empty((6, 4))
    ref.mix_class_targets(targets, perm, 0.6, 4, mixed)
    losses, a, b = np.empty(6), np.empty(6), np.empty(6)
    ref.softmax_cross_entropy(logits, mixed, 0.0, -100, 0, losses, None)
    ref.softmax_cross_entropy(logits, targets, 0.0, -100, 0, a, None)
    ref.softmax_cross_entropy(logits, targets[perm], 0.0, -100, 0, b, None)
    np.testing.assert_allclose(losses, 0.6 * a + 0.4 * b, rtol=1e-14)
