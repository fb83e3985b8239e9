"""Counter-based dropout randomness shared by every backend.

A dropout mask is a pure function of (seed, step, layer, element index), so the
backward pass regenerates it instead of storing it, and every backend draws the same
bits. The 64-bit ``key`` of a (seed, step, layer) triple is computed here once per
layer and step, in Python integers; each backend then hashes element indices with
the 32-bit mixer below (``lowbias32``, a bijection on 32-bit words):

    x = (index * 0x9E3779B1 + key_lo) mod 2^32
    x = x ^ key_hi
    x ^= x >> 16; x = x * 0x21F0AAAD mod 2^32
    x ^= x >> 15; x = x * 0x735A2D97 mod 2^32
    x ^= x >> 15
    keep = x >= threshold,   threshold = floor(p * 2^32)

so an element is kept with probability ``1 - threshold / 2^32``, which is ``1 - p`` to
within 2^-32.

Gaussian input noise (``spec.Backend.gaussian_noise``) draws from the same hash, under
the key :func:`noise_key` of a step: element ``e`` takes two 32-bit words, ``h1`` the
hash of ``e`` under ``(key_lo, key_hi)`` and ``h2`` under ``(key_lo, key_hi ^
NOISE_SECOND_STREAM)``, and turns them into one standard normal value by Box-Muller,
in float64 on every backend:

    u1 = (h1 + 1) / 2^32   in (0, 1]        u2 = h2 / 2^32   in [0, 1)
    z  = sqrt(-2 ln u1) cos(2 pi u2)

Both uniforms are exact in float64 (33 significant bits at most), so every backend has
the same uniforms bit for bit and z to within its log, cos and sqrt: libm's or CUDA's
(an ulp each), the numba backend's own log and cos (kernels.cpu.vecmath, made of
arithmetic so that the loop vectorises: within 2 and 3 ulp). |z| <= sqrt(64 ln 2) = 6.66 (u1 = 2^-32): the tails beyond (probability 3e-11)
are cut. The dropout keep bits and the noise of one element never share a key
(:func:`noise_key`).
"""
from __future__ import annotations

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
INDEX_MULTIPLIER = 0x9E3779B1
MIX_MULTIPLIER_1 = 0x21F0AAAD
MIX_MULTIPLIER_2 = 0x735A2D97
# The "layer" of the input noise in dropout_key's derivation: the model's dropout layers
# are numbered from 0, so no dropout key of any step is a noise key (noise_key).
NOISE_LAYER = MASK64
# XORed into key_hi for the second word of a noise draw: one key, two streams, and
# offset_key (which moves key_lo only) shifts both alike.
NOISE_SECOND_STREAM = 0x85EBCA6B


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def dropout_key(seed: int, step: int, layer: int) -> int:
    """The 64-bit key of the dropout mask of ``layer`` at training ``step``."""
    return _splitmix64(_splitmix64(_splitmix64(seed & MASK64) ^ (step & MASK64)) ^ (layer & MASK64))


def noise_key(seed: int, step: int) -> int:
    """The 64-bit key of the Gaussian input noise at training ``step``: the key
    :func:`dropout_key` derives for the layer NOISE_LAYER, which no dropout layer is
    (for a given seed and step the map layer -> key is a bijection), so the noise never
    shares its bits with a dropout mask of the same step."""
    return dropout_key(seed, step, NOISE_LAYER)


def keep_threshold(p: float) -> int:
    """The 32-bit threshold under which a hashed element is dropped (p in [0, 1))."""
    return min(int(p * 2.0**32), MASK32)


def split_key(key: int) -> tuple[int, int]:
    """(key_lo, key_hi): the two 32-bit halves the element hash consumes."""
    return key & MASK32, (key >> 32) & MASK32


def offset_key(key: int, first_element: int) -> int:
    """The key under which element ``i`` of a mask draws what element ``first_element + i``
    draws under ``key``: a batch's rows from ``r0`` on, of width ``w``, masked as rows
    ``r0, r0 + 1, ...`` of the whole batch, with ``first_element = r0 * w``.

    The hash reads the index only through ``index * 0x9E3779B1 + key_lo (mod 2^32)``, and

        (first_element + i) * 0x9E3779B1 + key_lo
            = i * 0x9E3779B1 + (key_lo + first_element * 0x9E3779B1)   (mod 2^32),

    so ``key_lo`` advances by ``first_element * 0x9E3779B1`` and ``key_hi`` stays: data-
    parallel ranks, each holding a shard of a batch, then draw the masks one process
    holding the whole batch would.
    """
    key_lo, key_hi = split_key(key)
    return (key_hi << 32) | ((key_lo + first_element * INDEX_MULTIPLIER) & MASK32)
