// The augmentation ops of kernels/spec.py (gaussian_noise, mix_rows, mix_class_targets):
// elementwise passes over a batch, each element computed independently
// (no reductions: the results do not depend on the launch shape).
//
// Launch shapes (kernels/cuda/augment.py): any block size and grid; every kernel is a
// grid-stride loop over its elements (n for the noise, n k for the mixes).
#include "rng.cuh"

// out_e = x_e + std z_e, z_e the standard normal value of element e (rng.cuh, the formula
// of kernels/rng.py) rounded to T, the product and the sum in T. out may be x.
template <typename T>
__global__ void gaussian_noise(const T* x, long long n, T std, unsigned int key_lo,
                               unsigned int key_hi, unsigned int second_hi, T* out) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const T z = T(fd::noise_value(static_cast<unsigned long long>(e), key_lo, key_hi, second_hi));
        out[e] = x[e] + fd::mul(std, z);
    }
}

// out[i, j] = left src[i, j] + right src[perm[i], j] over n rows of k, a perm[i] outside
// [0, n) reading zeros. out must not overlap src (the host checks).
template <typename T>
__global__ void mix_rows(const T* src, const long long* perm, long long n, long long k, T left,
                         T right, T* out) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n * k; e += stride) {
        const long long i = e / k, p = perm[i];
        const T partner = (p >= 0 && p < n) ? src[p * k + (e - i * k)] : T(0);
        out[e] = fd::mul(left, src[e]) + fd::mul(right, partner);
    }
}

// out[i, j] = left [targets[i] == j] + right [targets[perm[i]] == j], each term 0 where its
// class is not j (outside [0, k) it is no j; a perm[i] outside [0, n) names no class): the
// one-hot rows mixed as mix_rows mixes them, bit for bit.
template <typename T>
__global__ void mix_class_targets(const long long* targets, const long long* perm, long long n,
                                  long long k, T left, T right, T* out) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n * k; e += stride) {
        const long long i = e / k, j = e - i * k, p = perm[i];
        const long long partner = (p >= 0 && p < n) ? targets[p] : -1;
        out[e] = (targets[i] == j ? left : T(0)) + (partner == j ? right : T(0));
    }
}
