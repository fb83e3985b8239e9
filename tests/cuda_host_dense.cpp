// Host entry points over the device math of the dense kernels (kernels/cuda/activations.cuh,
// rng.cuh), built by tests/cuda_host.py for tests/test_cuda_host_dense.py.
#include "activations.cuh"
#include "rng.cuh"

namespace {

template <typename T>
void evaluate(bool grad, long long act, double alpha, const T* slope, const T* z, T* out,
              long long n) {
    const T a = static_cast<T>(alpha);  // as the kernels get it: a T argument
    for (long long i = 0; i < n; ++i) {
        out[i] = grad ? fd::derivative(static_cast<int>(act), z[i], a, slope[i])
                      : fd::activate(static_cast<int>(act), z[i], a, slope[i]);
    }
}

}  // namespace

extern "C" {

// out[i] = act(z[i]) (grad = 0) or act'(z[i]), with slope[i] the prelu slope of element i.
void activation_f32(long long grad, long long act, double alpha, const float* slope,
                    const float* z, float* out, long long n) {
    evaluate(grad != 0, act, alpha, slope, z, out, n);
}

void activation_f64(long long grad, long long act, double alpha, const double* slope,
                    const double* z, double* out, long long n) {
    evaluate(grad != 0, act, alpha, slope, z, out, n);
}

// out[i] = keep bit of index[i] (uint64 indices, any size).
void keep_bits(const unsigned long long* index, long long n, long long key_lo, long long key_hi,
               long long threshold, unsigned char* out) {
    for (long long i = 0; i < n; ++i) {
        out[i] = fd::keep_bit(index[i], static_cast<unsigned int>(key_lo),
                              static_cast<unsigned int>(key_hi),
                              static_cast<unsigned int>(threshold));
    }
}

// The activation codes of activations.cuh, in kernels/spec.py's order.
void activation_codes(long long* out) {
    using namespace fd::activation;
    const int codes[] = {IDENTITY, RELU, LEAKY_RELU, ELU, SELU, GELU, GELU_TANH,
                         SILU, SOFTPLUS, TANH, SIGMOID, PRELU};
    for (int i = 0; i < 12; ++i) {
        out[i] = codes[i];
    }
}

}  // extern "C"
