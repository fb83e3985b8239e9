// Activation functions and their derivatives by activation code (kernels/spec.py), for
// the dense kernels (dense.cu) and, as host C++, for tests/test_cuda_host_dense.py.
//
// Same formulas, branch choices and order of operations as kernels/reference/activations.py,
// element by element in T, with the reference's Python-float constants rounded to T as
// NumPy rounds them. Only the selected branch is evaluated, so the reference's guards
// against overflow in the unselected branch (expm1(min(z, 0)) and the like) are not
// needed. NaN takes the branch that carries it, as NumPy's maximum and where do:
// relu(NaN) = NaN but relu'(NaN) = 0 (the reference's (z > 0) is false), leaky'(NaN) = alpha.
#pragma once

#include "common.cuh"

namespace fd {
namespace activation {

// The codes of kernels/spec.py; tests/test_cuda_host_dense.py checks that they agree.
constexpr int IDENTITY = 0;
constexpr int RELU = 1;
constexpr int LEAKY_RELU = 2;
constexpr int ELU = 3;
constexpr int SELU = 4;
constexpr int GELU = 5;
constexpr int GELU_TANH = 6;
constexpr int SILU = 7;
constexpr int SOFTPLUS = 8;
constexpr int TANH = 9;
constexpr int SIGMOID = 10;
constexpr int PRELU = 11;

constexpr double SOFTPLUS_THRESHOLD = 20.0;
constexpr double SELU_ALPHA = 1.6732632423543772848170429916717;
constexpr double SELU_SCALE = 1.0507009873554804934193349852946;
// The reference's math.sqrt(2.0), math.sqrt(2.0 * math.pi), math.sqrt(2.0 / math.pi).
constexpr double SQRT_2 = 1.4142135623730951;
constexpr double SQRT_2_PI = 2.5066282746310002;
constexpr double SQRT_2_OVER_PI = 0.7978845608028654;
constexpr double GELU_TANH_C = 0.044715;
// The reference writes 3.0 * 0.044715 * z * z: the constant product is a double first.
constexpr double GELU_TANH_3C = 3.0 * GELU_TANH_C;

}  // namespace activation

// The result for a code kernels/spec.py does not define: NaN, which no activation
// returns for a finite input, so that a bad code cannot pass for another activation.
FD_HD float quiet_nan(float) { return ::nanf(""); }
FD_HD double quiet_nan(double) { return ::nan(""); }

// max(z, 0) with NaN carried through, as np.maximum(z, 0).
template <typename T>
FD_HD T relu(T z) { return z <= T(0) ? T(0) : z; }

// 1 / (1 + exp(-z)), with exp of -|z| only, so that neither branch overflows.
template <typename T>
FD_HD T sigmoid(T z) {
    const T e = fd::exp(-fd::fabs(z));
    return z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

template <typename T>
FD_HD T std_normal_cdf(T z) {
    return T(0.5) * (T(1) + fd::erf(z / T(activation::SQRT_2)));
}

// act(z); ``alpha`` is the leaky_relu slope or the elu alpha, ``slope`` the prelu slope
// of this element's unit (each read only by its activation).
template <typename T>
FD_HD T activate(int act, T z, T alpha, T slope) {
    using namespace activation;
    switch (act) {
    case IDENTITY:
        return z;
    case RELU:
        return relu(z);
    case LEAKY_RELU:
        return z > T(0) ? z : alpha * z;
    case PRELU:
        return z > T(0) ? z : slope * z;
    case ELU:
        return z > T(0) ? z : alpha * fd::expm1(z);
    case SELU:
        return T(SELU_SCALE) * (z > T(0) ? z : T(SELU_ALPHA) * fd::expm1(z));
    case GELU:
        return z * std_normal_cdf(z);
    case GELU_TANH:
        return T(0.5) * z
               * (T(1) + fd::tanh(T(SQRT_2_OVER_PI) * (z + T(GELU_TANH_C) * (z * z * z))));
    case SILU:
        return z * sigmoid(z);
    case SOFTPLUS:
        // Above the threshold log1p(exp(-z)) is below z's rounding (torch's choice).
        return z > T(SOFTPLUS_THRESHOLD) ? z : relu(z) + fd::log1p(fd::exp(-fd::fabs(z)));
    case TANH:
        return fd::tanh(z);
    case SIGMOID:
        return sigmoid(z);
    default:
        return quiet_nan(z);
    }
}

// act'(z); the subgradient at 0 is the left one (relu'(0) = 0, leaky'(0) = alpha).
template <typename T>
FD_HD T derivative(int act, T z, T alpha, T slope) {
    using namespace activation;
    switch (act) {
    case IDENTITY:
        return T(1);
    case RELU:
        return z > T(0) ? T(1) : T(0);
    case LEAKY_RELU:
        return z > T(0) ? T(1) : alpha;
    case PRELU:
        return z > T(0) ? T(1) : slope;
    case ELU:
        return z > T(0) ? T(1) : alpha * fd::exp(z);
    case SELU:
        return T(SELU_SCALE) * (z > T(0) ? T(1) : T(SELU_ALPHA) * fd::exp(z));
    case GELU: {
        const T pdf = fd::exp(T(-0.5) * z * z) / T(SQRT_2_PI);
        return std_normal_cdf(z) + z * pdf;
    }
    case GELU_TANH: {
        const T t = fd::tanh(T(SQRT_2_OVER_PI) * (z + T(GELU_TANH_C) * (z * z * z)));
        return T(0.5) * (T(1) + t)
               + T(0.5) * z * (T(1) - t * t) * T(SQRT_2_OVER_PI) * (T(1) + T(GELU_TANH_3C) * z * z);
    }
    case SILU: {
        const T s = sigmoid(z);
        return s * (T(1) + z * (T(1) - s));
    }
    case SOFTPLUS:
        return z > T(SOFTPLUS_THRESHOLD) ? T(1) : sigmoid(z);
    case TANH: {
        const T t = fd::tanh(z);
        return T(1) - t * t;
    }
    case SIGMOID: {
        const T s = sigmoid(z);
        return s * (T(1) - s);
    }
    default:
        return quiet_nan(z);
    }
}

}  // namespace fd
