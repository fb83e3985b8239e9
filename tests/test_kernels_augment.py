"""Augmentation ops of the fast backends against kernels.reference (itself checked against
the formulas in tests/test_reference_augment.py): the noise, row and class-target mixing
on random and awkward shapes, strided arrays, both dtypes."""
import numpy as np
import pytest

from conftest import TOLERANCES
from kernels import rng

SHAPES = [(1, 1), (7, 13), (1, 1000), (1000, 1), (64, 10), (300, 701)]


def noise_input(shape, dtype, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 2).astype(dtype)


@pytest.fixture
def parallel_augment(monkeypatch):
    """kernels.cpu with the augmentation ops on their parallel (prange) kernels."""
    from conftest import load_backend

    cpu = load_backend("cpu")
    from kernels.cpu import augment
    monkeypatch.setattr(augment, "PARALLEL_MIN_WORK", 0)
    return cpu


# --------------------------------------------------------------------------- noise
@pytest.mark.parametrize("shape", SHAPES + [(5,), (3, 4, 5)], ids=str)
def test_gaussian_noise(fast, ref, dtype, shape):
    X = noise_input(shape, dtype)
    key = rng.noise_key(5, 17)
    out = fast.zeros(shape, dtype)
    fast.gaussian_noise(fast.to_device(X, dtype), 0.3, key, out)
    expected = np.empty_like(X)
    ref.gaussian_noise(X, 0.3, key, expected)
    # z in float64 from the same hash words, through each library's log and cos (an ulp
    # apart at times), then rounded: the dtype's tolerance holds.
    np.testing.assert_allclose(fast.to_host(out), expected, **TOLERANCES[dtype])


def test_gaussian_noise_in_place_and_strided(fast, ref, dtype):
    key = rng.noise_key(1, 2)
    X = noise_input((40, 30), dtype, seed=1)
    expected = np.empty((40, 15), dtype)
    ref.gaussian_noise(np.ascontiguousarray(X[:, ::2]), 2.0, key, expected)
    on_device = fast.to_device(X.copy(), dtype)  # a copy: the numba backend's arrays are X itself
    view = on_device[:, ::2]
    fast.gaussian_noise(view, 2.0, key, view)  # in place, on a strided view
    got = fast.to_host(on_device)
    np.testing.assert_allclose(got[:, ::2], expected, **TOLERANCES[dtype])
    np.testing.assert_array_equal(got[:, 1::2], X[:, 1::2])  # the other columns untouched
    contiguous = fast.to_device(X.copy(), dtype)
    fast.gaussian_noise(contiguous, 2.0, key, contiguous)
    reference_whole = np.empty_like(X)
    ref.gaussian_noise(X, 2.0, key, reference_whole)
    np.testing.assert_allclose(fast.to_host(contiguous), reference_whole, **TOLERANCES[dtype])


def test_gaussian_noise_large_keys_and_statistics(fast, ref):
    """Keys with both halves set, 10^6 draws: the same values as the reference, and the
    statistics a standard normal sample has (mean and deviation within 5 standard errors)."""
    X = np.zeros(10**6)
    out = fast.zeros(X.shape, np.float64)
    for key in (2**64 - 1, rng.noise_key(2**40, 2**33)):
        fast.gaussian_noise(fast.to_device(X, np.float64), 1.0, key, out)
        got = fast.to_host(out)
        expected = np.empty_like(X)
        ref.gaussian_noise(X, 1.0, key, expected)
        np.testing.assert_allclose(got, expected, **TOLERANCES[np.float64])
        assert abs(got.mean()) < 5e-3 and abs(got.std() - 1) < 5 / np.sqrt(2e6)


def test_gaussian_noise_parallel(parallel_augment, ref):
    X = noise_input((300, 70), np.float32, seed=2)
    out, expected = np.empty_like(X), np.empty_like(X)
    parallel_augment.gaussian_noise(X, 0.5, 99, out)
    ref.gaussian_noise(X, 0.5, 99, expected)
    np.testing.assert_allclose(out, expected, **TOLERANCES[np.float32])



# ------------------------------------------------ the numba noise's own log and cos
def _hash_words():
    """10^6 random 32-bit hash words and those at the edges of cos_turns' folds and of
    log_positive's (u1 = 2^-32, 1/2, sqrt(1/2), 1)."""
    folds = [k * 2**29 + d for k in range(9) for d in (-1, 0, 1)]
    sqrt_half = int(2**32 / np.sqrt(2))
    edges = [w for w in folds + [sqrt_half - 2, sqrt_half - 1, sqrt_half, 2**32 - 2] if 0 <= w < 2**32]
    words = np.random.default_rng(8).integers(0, 2**32, 10**6, dtype=np.uint64)
    return np.concatenate([np.array(edges, np.uint64), words]).astype(np.float64)


def test_numba_noise_log_and_cos_within_a_few_ulp():
    """kernels.cpu.vecmath's log_positive and cos_turns (the noise's Box-Muller, made of
    arithmetic so that its loop vectorises) on the uniforms the hash gives, called from a
    loop with the kernels' fastmath flags, against long double values."""
    numba = pytest.importorskip("numba")
    if np.finfo(np.longdouble).nmant < 60:
        pytest.skip("needs an extended long double for the exact values")
    from kernels.cpu.jit import FASTMATH
    from kernels.cpu.vecmath import cos_turns, log_positive

    @numba.njit(fastmath=set(FASTMATH))
    def log_and_cos(u1, u2, logs, cosines):
        for i in range(u1.size):
            logs[i] = log_positive(u1[i])
            cosines[i] = cos_turns(u2[i])

    words = _hash_words()
    u1, u2 = (words + 1.0) * 2.0**-32, words * 2.0**-32  # kernels.rng's uniforms
    logs, cosines = np.empty_like(u1), np.empty_like(u2)
    log_and_cos(u1, u2, logs, cosines)
    exact_log = np.log(u1.astype(np.longdouble))
    two_pi = np.longdouble("6.283185307179586476925286766559005768")
    exact_cos = np.cos(two_pi * u2.astype(np.longdouble))
    log_ulps = np.abs((logs - exact_log).astype(np.float64)) / np.spacing(np.abs(exact_log.astype(np.float64)))
    assert log_ulps[u1 < 1].max() <= 2, log_ulps.max()  # measured 1.4 (libm's 0.6)
    assert logs[u1 == 1].tolist() == [0.0]
    cos_error = np.abs((cosines - exact_cos).astype(np.float64))
    away_from_zeros = np.abs(exact_cos) >= 1e-3
    cos_ulps = cos_error[away_from_zeros] / np.spacing(np.abs(exact_cos[away_from_zeros].astype(np.float64)))
    assert cos_ulps.max() <= 3, cos_ulps.max()  # measured 2.3
    # Near its zeros, absolute: libm's cos(2 pi u) is off by up to 6e-16 there (2 pi u rounded).
    assert cos_error.max() <= 3e-16, cos_error.max()  # measured 1.7e-16


def test_numba_noise_gets_no_fastmath_from_its_kernel():
    """The noise's scalar helpers are compiled without fastmath (kernels.cpu.jit.scalar),
    so that no reassociation inside a fastmath kernel can undo cos_turns' exact folds."""
    numba = pytest.importorskip("numba")
    import re

    from kernels.cpu.jit import FASTMATH
    from kernels.cpu.rng import noise_value

    @numba.njit(fastmath=set(FASTMATH))
    def noise_all(out, key_lo, key_hi, second_hi):
        for i in range(out.size):
            out[i] = noise_value(i, key_lo, key_hi, second_hi)

    noise_all(np.zeros(3), np.uint32(1), np.uint32(2), np.uint32(3))
    ir = noise_all.inspect_llvm(noise_all.signatures[0])
    reassociated = [line for line in ir.splitlines() if re.search(r"= f(add|sub|mul|div) [a-z ]*\breassoc\b", line)]
    assert not reassociated, reassociated[:3]


# -------------------------------------------------------------------------- mixup
def permutation_with_outsiders(n, seed):
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    if n > 2:
        perm[1], perm[-1] = -1, n  # partners outside the batch read zeros
    return perm


@pytest.mark.parametrize("shape", SHAPES + [(6,), (1,)], ids=str)
def test_mix_rows(fast, ref, dtype, shape):
    src = noise_input(shape, dtype, seed=3)
    perm = permutation_with_outsiders(shape[0], 4)
    out = fast.zeros(shape, dtype)
    fast.mix_rows(fast.to_device(src, dtype), fast.to_device(perm, np.int64), 0.37, out)
    expected = np.empty_like(src)
    ref.mix_rows(src, perm, 0.37, expected)
    np.testing.assert_allclose(fast.to_host(out), expected, **TOLERANCES[dtype])


def test_mix_rows_strided_and_refuses_overlap(fast, ref, dtype):
    wide = noise_input((30, 20), dtype, seed=5)
    perm = permutation_with_outsiders(15, 6)
    on_device = fast.to_device(wide, dtype)
    out_base = fast.zeros((15, 30), dtype)
    fast.mix_rows(on_device[::2, 3:13], fast.to_device(perm, np.int64), 0.8, out_base[:, 10:20])
    expected = np.empty((15, 10), dtype)
    ref.mix_rows(np.ascontiguousarray(wide[::2, 3:13]), perm, 0.8, expected)
    got = fast.to_host(out_base)
    np.testing.assert_allclose(got[:, 10:20], expected, **TOLERANCES[dtype])
    assert (got[:, :10] == 0).all() and (got[:, 20:] == 0).all()
    with pytest.raises(ValueError, match="overlap"):
        fast.mix_rows(on_device, fast.to_device(np.arange(30), np.int64), 0.5, on_device)


def test_mix_rows_parallel(parallel_augment, ref):
    src = noise_input((200, 33), np.float64, seed=7)
    perm = permutation_with_outsiders(200, 8)
    out, expected = np.empty_like(src), np.empty_like(src)
    parallel_augment.mix_rows(src, perm, 0.1, out)
    ref.mix_rows(src, perm, 0.1, expected)
    np.testing.assert_allclose(out, expected, **TOLERANCES[np.float64])


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 10), (1000, 3), (2, 1500)], ids=str)
def test_mix_class_targets(fast, ref, dtype, shape):
    n, k = shape
    targets = np.random.default_rng(9).integers(0, k, n)
    targets[::5] = -100  # outside [0, K): a zero one-hot row
    if n > 3:
        targets[3] = k
    perm = permutation_with_outsiders(n, 10)
    out = fast.zeros(shape, dtype)
    fast.mix_class_targets(fast.to_device(targets, np.int64), fast.to_device(perm, np.int64), 0.62, k, out)
    expected = np.empty(shape, dtype)
    ref.mix_class_targets(targets, perm, 0.62, k, expected)
    # Sums of two one-hot terms in the dtype: the same bits.
    np.testing.assert_array_equal(fast.to_host(out), expected)


def test_mix_class_targets_into_a_strided_out(fast, ref, dtype):
    targets, perm = np.array([0, 3, 1, 2, 2]), np.array([4, 3, 2, 1, 0])
    base = fast.zeros((5, 10), dtype)
    fast.mix_class_targets(fast.to_device(targets, np.int64), fast.to_device(perm, np.int64), 0.25, 4,
                           base[:, 1:9:2])
    expected = np.empty((5, 4), dtype)
    ref.mix_class_targets(targets, perm, 0.25, 4, expected)
    got = fast.to_host(base)
    np.testing.assert_array_equal(got[:, 1:9:2], expected)
    assert (got[:, ::2] == 0).all()


def test_bad_arguments_are_refused(fast):
    x = fast.to_device(np.zeros((4, 3), np.float32), np.float32)
    with pytest.raises(ValueError, match="out"):
        fast.gaussian_noise(x, 1.0, 0, fast.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="perm"):
        fast.mix_rows(x, fast.to_device(np.arange(3), np.int64), 0.5, fast.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="out"):
        fast.mix_class_targets(fast.to_device(np.arange(4), np.int64), fast.to_device(np.arange(4), np.int64),
                               0.5, 5, fast.zeros((4, 3), np.float32))
