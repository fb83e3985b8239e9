// Shared by every kernel file of kernels/cuda and by the host C++ tests of the device
// math (tests/cuda_host.py): the qualifiers that let a scalar function compile both as
// CUDA device code (NVRTC, through CuPy) and as plain host C++ (g++), and the math
// functions by type, so that templates over float and double call expf/exp and friends
// explicitly instead of trusting overload resolution to pick the float versions.
#pragma once

#if defined(__CUDACC__)
#define FD_HD __host__ __device__ __forceinline__
#else
#include <math.h>
#define FD_HD inline
#endif

namespace fd {

#define FD_UNARY(name)                                           \
    FD_HD float name(float x) { return ::name##f(x); }         \
    FD_HD double name(double x) { return ::name(x); }
FD_UNARY(exp)
FD_UNARY(expm1)
FD_UNARY(log)
FD_UNARY(log1p)
FD_UNARY(cos)
FD_UNARY(sqrt)
FD_UNARY(tanh)
FD_UNARY(erf)
FD_UNARY(fabs)
#undef FD_UNARY

// a * b rounded on its own, as NumPy rounds it: never contracted into an fma with a
// following add (__fmul_rn / __dmul_rn on the device), whatever the compile options say.
// compiler.OPTIONS turns contraction off for every kernel too (--fmad=false), and the
// host build of the tests does (-ffp-contract=off); the update and loss math, where a
// cancelling sum makes the product's rounding visible, do not depend on either.
FD_HD float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

FD_HD double mul(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}

// W consecutive elements of an array, loaded and stored as one access (16 bytes when
// W > 1: float4 / double2), at an index that is a multiple of W into an array aligned to
// it (the callers check both before choosing W > 1).
template <typename T, int W>
struct alignas(sizeof(T) * W) Pack {
    T v[W];
};

template <int W, typename T>
FD_HD Pack<T, W> load(const T* at) {
    return *reinterpret_cast<const Pack<T, W>*>(at);
}

template <int W, typename T>
FD_HD void store(T* at, const Pack<T, W>& value) {
    *reinterpret_cast<Pack<T, W>*>(at) = value;
}

// IEEE finiteness without the library's isfinite, whose spelling differs between NVRTC
// and host C++: x - x is 0 for every finite x and NaN for NaN and +-Inf. No kernel is
// compiled with fast math, which would fold it to true.
template <typename T>
FD_HD bool finite(T x) { return x - x == T(0); }

}  // namespace fd

#if defined(__CUDACC__)
namespace fd {

// The value v of the lane lane_id ^ lane_mask of the calling warp: __shfl_xor_sync with
// the full mask, so every lane of the warp must make the call. Every warp shuffle of
// kernels/cuda goes through here, for the sake of one test seam:
//
// FD_EMULATE_WARP_SHUFFLES is defined by tests/emulated_cuda.py alone, which runs the
// kernels on gpuocelot's PTX emulator; that emulator cannot execute shfl.sync (a parse
// error) and runs the legacy shfl as a silent no-op. There the exchange goes through
// shared memory instead: each thread posts v in its own slot of a block-wide array, then
// reads its partner's slot. Nothing orders the read after the partner's post but the
// emulator itself, which steps all threads of a block through each instruction together
// (volatile keeps the compiler from reordering or dropping the two accesses). On a GPU,
// warps run independently and lanes of a warp need not be converged, so the partner's
// slot may still hold an older value: never compile it for a device (compiler.OPTIONS
// never defines the macro).
template <typename V>
__device__ __forceinline__ V shfl_xor(V v, int lane_mask) {
#if defined(FD_EMULATE_WARP_SHUFFLES)
    __shared__ V slots[1024];  // one per thread of the largest block
    volatile V* const slot = slots;
    const unsigned int thread =
        threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    slot[thread] = v;
    return slot[thread ^ (unsigned int)lane_mask];
#else
    return __shfl_xor_sync(0xffffffffu, v, lane_mask);
#endif
}

}  // namespace fd
#endif
