"""The device math of the CUDA dense kernels (kernels/cuda/activations.cuh, rng.cuh), built
as host C++ (tests/cuda_host.py) and compared with kernels.reference; and the Python-side
dropout arguments of kernels.cuda.dense, which need no device."""
import math

import numpy as np
import pytest

from cuda_host import build, call
from kernels import rng, spec
from kernels.reference import activations as reference
from kernels.reference import dense as reference_dense

# spec's activation codes by name, in the order tests/cuda_host_dense.cpp reports its own.
ACTIVATION_NAMES = ["IDENTITY", "RELU", "LEAKY_RELU", "ELU", "SELU", "GELU", "GELU_TANH", "SILU",
                    "SOFTPLUS", "TANH", "SIGMOID", "PRELU"]
CODES = [getattr(spec, name) for name in ACTIVATION_NAMES]
ALPHA = 0.2  # the leaky slope / the elu alpha

# Allowed error in units of the reference's rounding: the host libm (glibc) and NumPy's own
# float32/float64 exp, tanh, expm1, log1p differ by up to 1-2 ulp, and a formula adds a
# few roundings on top; measured at most 3 ulp over 300,000 points per activation.
ULPS = 4


def term_scale(act, grad, z):
    """Magnitude of the terms that cancel in the reference's formula, where the result can
    be far smaller than its inputs' rounding: there the bound is ULPS times eps times this,
    not times the result's ulp. E.g. gelu(z) = z * 0.5 * (1 + erf(z / sqrt 2)) for z << 0:
    1 + erf carries an absolute error of eps, so the result one of |z| eps / 2."""
    a = np.abs(z.astype(np.float64))
    one, none = np.ones_like(a), np.zeros_like(a)
    if not grad:
        return {spec.GELU: a, spec.GELU_TANH: a}.get(act, none)
    with np.errstate(over="ignore"):  # inf for the largest z: no bound where t^2 rounds to 1
        gelu_tanh = 1 + 0.5 * a * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * a * a)  # 1 - t^2
    return {spec.GELU: one, spec.GELU_TANH: gelu_tanh, spec.SILU: 1 + a,  # 1 - s, times z
            spec.TANH: one, spec.SIGMOID: one}.get(act, none)


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return build("cuda_host_dense.cpp", tmp_path_factory)


def evaluate(lib, dtype, grad, act, z, slope, alpha=ALPHA):
    out = np.full_like(z, 12345.0)
    name = "activation_f32" if dtype == np.float32 else "activation_f64"
    call(lib, name, int(grad), act, alpha, slope, z, out, z.size)
    return out


def reference_values(grad, act, z, slope):
    with np.errstate(all="ignore"):  # overflow and inf * 0 in the special values
        return (reference.derivative if grad else reference.activate)(act, ALPHA, slope, z)


def special_values(dtype):
    """Zeros, tiny and huge magnitudes, infinities and the softplus threshold's neighbours."""
    info = np.finfo(dtype)
    threshold = dtype(spec.SOFTPLUS_THRESHOLD)
    positive = np.array([0.0, info.smallest_subnormal, info.smallest_normal, 1e-30, 1e-7, 0.5, 1.0,
                         5.0, 19.5, np.nextafter(threshold, dtype(0)), threshold,
                         np.nextafter(threshold, dtype(np.inf)), 20.5, 88.5, 100.0, 1e4, 1e15,
                         info.max, np.inf], dtype=dtype)
    return np.concatenate([positive, -positive])


def sample(dtype):
    g = np.random.default_rng(0)
    z = np.concatenate([np.linspace(-30, 30, 60001), g.standard_normal(20000) * 4,
                        special_values(dtype)]).astype(dtype)
    slope = g.uniform(0.05, 0.5, z.size).astype(dtype)
    return z, slope


def assert_matches(got, expected, z, act, grad, dtype):
    what = f"{ACTIVATION_NAMES[act]}{' derivative' if grad else ''} {np.dtype(dtype).name}"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{what}: NaN at")
    infinite = np.isinf(expected)
    np.testing.assert_array_equal(got[infinite], expected[infinite], err_msg=f"{what}: inf")
    finite = np.isfinite(expected)
    assert np.isfinite(got[finite]).all(), what
    g, e, zf = got[finite], expected[finite], z[finite]
    with np.errstate(over="ignore"):  # the spacing of the largest finite value is inf
        ulp = np.spacing(np.abs(e)).astype(np.float64)
    bound = ULPS * (ulp + np.finfo(dtype).eps * term_scale(act, grad, zf))
    error = np.abs(g.astype(np.float64) - e.astype(np.float64))
    bad = ~(error <= bound)
    if bad.any():
        rows = "\n".join(f"  z={zf[i]!r}: {g[i]!r} (host) {e[i]!r} (reference), "
                         f"bound {bound[i]:.3g}" for i in np.flatnonzero(bad)[:10])
        raise AssertionError(f"{what}: {bad.sum()} of {bad.size} values differ\n{rows}")


def test_activation_codes_match_spec(lib):
    got = np.zeros(len(ACTIVATION_NAMES), np.int64)
    call(lib, "activation_codes", got)
    assert got.tolist() == CODES
    assert sorted(CODES) == list(range(len(CODES)))  # the spec defines no others


@pytest.mark.parametrize("grad", [False, True], ids=["activate", "derivative"])
@pytest.mark.parametrize("act", CODES, ids=ACTIVATION_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_activation_matches_reference(lib, dtype, act, grad):
    z, slope = sample(dtype)
    got = evaluate(lib, dtype, grad, act, z, slope)
    expected = reference_values(grad, act, z, slope)
    assert expected.dtype == dtype
    assert_matches(got, expected, z, act, grad, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_nan_propagates_as_in_the_reference(lib, dtype):
    """NaN in, NaN out, except where the reference's test sends NaN to a constant branch
    (relu' = 0, leaky' = alpha, prelu' = slope, identity' = 1)."""
    z = np.full(3, np.nan, dtype)
    slope = np.full(3, 0.25, dtype)
    constant = {(spec.IDENTITY, True): 1.0, (spec.RELU, True): 0.0,
                (spec.LEAKY_RELU, True): dtype(ALPHA), (spec.PRELU, True): 0.25}
    for act in CODES:
        for grad in (False, True):
            got = evaluate(lib, dtype, grad, act, z, slope)
            expected = reference_values(grad, act, z, slope)
            want = constant.get((act, grad), np.nan)
            np.testing.assert_array_equal(expected, np.full(3, want, dtype))  # the premise
            np.testing.assert_array_equal(got, expected, err_msg=f"{ACTIVATION_NAMES[act]} {grad}")


@pytest.mark.parametrize("code", [-1, 12, 13, 1000])
def test_unknown_activation_code_gives_nan(lib, code):
    z = np.array([-2.0, 0.0, 0.5, 3.0])
    for grad in (False, True):
        assert np.isnan(evaluate(lib, np.float64, grad, code, z, np.ones_like(z))).all()
        z32, one32 = z.astype(np.float32), np.ones(4, np.float32)
        assert np.isnan(evaluate(lib, np.float32, grad, code, z32, one32)).all()


KEYS = [0, 1, 2**32 - 1, 2**32, rng.dropout_key(0, 1, 0), rng.dropout_key(1234, 77, 3), 2**64 - 1]
DROPOUT_P = [0.0, 1e-12, 0.1, 0.5, 0.9, 1 - 2**-30]


def host_keep_bits(lib, indices, key, p):
    key_lo, key_hi = rng.split_key(key)
    out = np.zeros(indices.size, np.uint8)
    call(lib, "keep_bits", np.ascontiguousarray(indices, np.uint64), indices.size, key_lo, key_hi,
         rng.keep_threshold(p), out)
    return out.astype(bool)


def python_word(index, key_lo, key_hi):
    """The hash of kernels/rng.py's docstring, in Python integers."""
    x = (index * 0x9E3779B1 + key_lo) % 2**32
    x ^= key_hi
    x ^= x >> 16
    x = x * 0x21F0AAAD % 2**32
    x ^= x >> 15
    x = x * 0x735A2D97 % 2**32
    return x ^ (x >> 15)


def python_keep_bit(index, key, p):
    return python_word(index, key & 0xFFFFFFFF, key >> 32) >= math.floor(p * 2**32)


@pytest.mark.parametrize("p", DROPOUT_P)
@pytest.mark.parametrize("key", KEYS)
def test_keep_bit_matches_reference_mask(lib, key, p):
    n = 100_003
    mask = np.empty(n, np.float64)
    reference_dense.dropout_mask(p, key, mask)
    got = host_keep_bits(lib, np.arange(n, dtype=np.uint64), key, p)
    np.testing.assert_array_equal(got, mask != 0)


@pytest.mark.parametrize("key", KEYS)
def test_keep_bit_of_indices_past_32_bits(lib, key):
    """Indices are hashed mod 2^32 (flat indices of arrays over 2^32 elements)."""
    p = 0.5
    low = np.array([0, 1, 2, 12345, 2**31, 2**32 - 1], np.uint64)
    high = np.concatenate([low + np.uint64(2**32), low + np.uint64(2**40), low | np.uint64(2**63)])
    got = host_keep_bits(lib, high, key, p)
    np.testing.assert_array_equal(got, np.tile(host_keep_bits(lib, low, key, p), 3))
    np.testing.assert_array_equal(got, [python_keep_bit(int(i), key, p) for i in high])


def cuda_dense():
    try:
        from kernels.cuda import dense
    except ImportError as error:
        pytest.skip(f"kernels.cuda cannot be imported here: {error}")
    return dense


# p whose masks of 4096 elements keep some, so the reference shows its kept value.
@pytest.mark.parametrize("p", [0.0, 1e-12, 0.1, 1 / 3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_mask_args_give_the_reference_mask(dtype, p):
    """What the kernels get: the key halves, threshold and scale (bitwise the reference's
    kept value) as the exact C types of the kernel parameters."""
    dense = cuda_dense()
    key = KEYS[5]
    dropout, key_lo, key_hi, threshold, scale = dense.mask_args(p, key, np.dtype(dtype))
    assert type(dropout) is np.int32 and type(scale) is np.dtype(dtype).type
    assert all(type(x) is np.uint32 for x in (key_lo, key_hi, threshold))
    mask = np.empty(4096, dtype)
    reference_dense.dropout_mask(p, key, mask)
    assert scale.tobytes() == mask.max().tobytes()
    assert bool(dropout) == (not (mask == 1).all())
    if p > 0:
        assert (int(key_lo), int(key_hi)) == rng.split_key(key)
        assert int(threshold) == rng.keep_threshold(p)


def test_mask_args_bad_input():
    dense = cuda_dense()
    for p in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="dropout_p"):
            dense.mask_args(p, 1, np.dtype(np.float32))
    with pytest.raises(ValueError, match="key"):
        dense.mask_args(0.5, None, np.dtype(np.float32))


def test_row_chunks_cover_every_row_once():
    """backward_columns sums rows [c * rows, (c + 1) * rows) of chunk c < chunks."""
    dense = cuda_dense()
    for n in list(range(1, 300)) + [4095, 4096, 4097, 10**5, 2**31 + 5]:
        rows, chunks = dense._row_chunks(n)
        assert rows % dense.ROW_LANES == 0 and 1 <= chunks <= dense.MAX_CHUNKS
        assert (chunks - 1) * rows < n <= chunks * rows, n
