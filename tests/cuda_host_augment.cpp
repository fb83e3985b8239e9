// Host entry points over the input noise's device math (kernels/cuda/rng.cuh: hash_word,
// standard_normal, noise_value), built by tests/cuda_host.py for
// tests/test_cuda_host_augment.py.
#include "rng.cuh"

extern "C" {

// words[2 i] = h1, words[2 i + 1] = h2 of element index[i]; z[i] its standard normal value.
void noise_values(const unsigned long long* index, long long n, long long key_lo, long long key_hi,
                  long long second_hi, unsigned int* words, double* z) {
    const auto lo = static_cast<unsigned int>(key_lo), hi = static_cast<unsigned int>(key_hi),
               second = static_cast<unsigned int>(second_hi);
    for (long long i = 0; i < n; ++i) {
        words[2 * i] = fd::hash_word(index[i], lo, hi);
        words[2 * i + 1] = fd::hash_word(index[i], lo, second);
        z[i] = fd::noise_value(index[i], lo, hi, second);
    }
}

// z[i] = standard_normal(h1[i], h2[i]): the transform at chosen words (its extremes).
void standard_normals(const unsigned int* h1, const unsigned int* h2, long long n, double* z) {
    for (long long i = 0; i < n; ++i) z[i] = fd::standard_normal(h1[i], h2[i]);
}

}  // extern "C"
