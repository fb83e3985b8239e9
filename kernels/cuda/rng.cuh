// The dropout keep bit of kernels/rng.py, for the dense kernels (dense.cu) and, as host
// C++, for tests/test_cuda_host_dense.py, which checks it bit for bit against the
// reference's masks. All arithmetic is on 32-bit unsigned words, wrapping mod 2^32 as
// the hash is defined.
#pragma once

#include "common.cuh"

namespace fd {
namespace rng {

constexpr unsigned int INDEX_MULTIPLIER = 0x9E3779B1u;
constexpr unsigned int MIX_MULTIPLIER_1 = 0x21F0AAADu;
constexpr unsigned int MIX_MULTIPLIER_2 = 0x735A2D97u;

}  // namespace rng

// Whether element ``index`` (taken mod 2^32, as the hash's first multiply does anyway)
// is kept: lowbias32((index * 0x9E3779B1 + key_lo) ^ key_hi) >= threshold, with
// threshold = floor(p * 2^32) (kernels.rng.keep_threshold).
FD_HD bool keep_bit(unsigned long long index, unsigned int key_lo, unsigned int key_hi,
                    unsigned int threshold) {
    unsigned int x = static_cast<unsigned int>(index) * rng::INDEX_MULTIPLIER + key_lo;
    x ^= key_hi;
    x ^= x >> 16;
    x *= rng::MIX_MULTIPLIER_1;
    x ^= x >> 15;
    x *= rng::MIX_MULTIPLIER_2;
    x ^= x >> 15;
    return x >= threshold;
}

}  // namespace fd
