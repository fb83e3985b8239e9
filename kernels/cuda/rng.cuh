// The hash of kernels/rng.py: the dropout keep bit, for the dense and norm kernels
// (dense.cu, norm.cu), and the input noise's standard normal values (augment.cu); as host
// C++, for tests/test_cuda_host_dense.py and tests/test_cuda_host_augment.py, which check
// them against the reference (the bits bit for bit). The hash's arithmetic is on 32-bit
// unsigned words, wrapping mod 2^32 as the hash is defined.
#pragma once

#include "common.cuh"

namespace fd {
namespace rng {

constexpr unsigned int INDEX_MULTIPLIER = 0x9E3779B1u;
constexpr unsigned int MIX_MULTIPLIER_1 = 0x21F0AAADu;
constexpr unsigned int MIX_MULTIPLIER_2 = 0x735A2D97u;

}  // namespace rng

// The hash word of element ``index`` (taken mod 2^32, as the hash's first multiply does
// anyway): lowbias32((index * 0x9E3779B1 + key_lo) ^ key_hi).
FD_HD unsigned int hash_word(unsigned long long index, unsigned int key_lo, unsigned int key_hi) {
    unsigned int x = static_cast<unsigned int>(index) * rng::INDEX_MULTIPLIER + key_lo;
    x ^= key_hi;
    x ^= x >> 16;
    x *= rng::MIX_MULTIPLIER_1;
    x ^= x >> 15;
    x *= rng::MIX_MULTIPLIER_2;
    x ^= x >> 15;
    return x;
}

// Whether element ``index`` is kept: its hash word >= threshold, with
// threshold = floor(p * 2^32) (kernels.rng.keep_threshold).
FD_HD bool keep_bit(unsigned long long index, unsigned int key_lo, unsigned int key_hi,
                    unsigned int threshold) {
    return hash_word(index, key_lo, key_hi) >= threshold;
}

// The standard normal value of the hash words h1, h2 of an element (the input noise of
// kernels/rng.py), by Box-Muller in double, in the reference's order of operations:
// u1 = (h1 + 1) 2^-32 in (0, 1], u2 = h2 2^-32 in [0, 1) (both exact in double),
// z = sqrt(-2 log u1) cos(2 pi u2), 2 pi being the double nearest it (as 2.0 * np.pi).
FD_HD double standard_normal(unsigned int h1, unsigned int h2) {
    const double u1 = (double(h1) + 1.0) * 0x1p-32;
    const double u2 = double(h2) * 0x1p-32;
    return fd::sqrt(-2.0 * fd::log(u1)) * fd::cos(6.283185307179586 * u2);
}

// z of element ``index``: its words under key_hi and under second_hi, which is key_hi ^
// kernels.rng.NOISE_SECOND_STREAM (given by the caller).
FD_HD double noise_value(unsigned long long index, unsigned int key_lo, unsigned int key_hi,
                         unsigned int second_hi) {
    return standard_normal(hash_word(index, key_lo, key_hi), hash_word(index, key_lo, second_hi));
}

// keep / (1 - p) of element k, ``scale`` being 1 / (1 - p) rounded in T by the caller, as
// the reference rounds it. Multiplied, never selected, by the kernels: NaN and inf in a
// dropped element's other factor stay visible, as in the reference's multiplication by
// its mask.
template <typename T>
FD_HD T mask_value(long long k, unsigned int key_lo, unsigned int key_hi, unsigned int threshold,
                   T scale) {
    return keep_bit(static_cast<unsigned long long>(k), key_lo, key_hi, threshold) ? scale : T(0);
}

}  // namespace fd
