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
"""
from __future__ import annotations

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
INDEX_MULTIPLIER = 0x9E3779B1
MIX_MULTIPLIER_1 = 0x21F0AAAD
MIX_MULTIPLIER_2 = 0x735A2D97


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def dropout_key(seed: int, step: int, layer: int) -> int:
    """The 64-bit key of the dropout mask of ``layer`` at training ``step``."""
    return _splitmix64(_splitmix64(_splitmix64(seed & MASK64) ^ (step & MASK64)) ^ (layer & MASK64))


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
