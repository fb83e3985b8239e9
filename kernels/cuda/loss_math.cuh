// The scalar math of the losses and metrics of kernels/spec.py (softmax_cross_entropy,
// binary_cross_entropy, mse, huber, metric_sums), shared by losses.cu and decisions.cu.
//
// The first part is FD_HD and compiles as host C++ too: tests/cuda_host_losses.cpp
// checks it against kernels.reference. It follows the reference's order of operations
// in the data's type T, so that the kernels round as NumPy does, with the sums of a row
// in double (as kernels/cpu/losses.py). The second part (device only) holds the warp and
// block reductions the kernels of both files are built from.
#pragma once
#include "common.cuh"

namespace fd {
namespace loss {

template <typename T>
FD_HD T quiet_nan();
template <>
FD_HD float quiet_nan<float>() { return ::nanf(""); }
template <>
FD_HD double quiet_nan<double>() { return ::nan(""); }

// ------------------------------------------------------------------ elementwise losses
// l(x, t) and dl/dx of one element in T, each a struct so that a kernel template takes
// the loss as a type. `delta` is read by Huber only.

// max(x, 0) - x t + log1p(exp(-|x|)), as the reference: (max - x t) + log1p(e).
template <typename T>
FD_HD T bce_loss(T x, T t) {
    const T relu = x > T(0) ? x : T(0);  // NaN x: x t below is NaN anyway
    return (relu - mul(x, t)) + fd::log1p(fd::exp(-fd::fabs(x)));
}

// sigmoid(x) - t with exp of -|x| only, so that neither branch overflows.
template <typename T>
FD_HD T bce_grad(T x, T t) {
    const T e = fd::exp(-fd::fabs(x));
    const T sigmoid = x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
    return sigmoid - t;
}

struct Bce {
    template <typename T>
    FD_HD static void eval(T x, T t, T, T& loss, T& grad) {
        loss = bce_loss(x, t);
        grad = bce_grad(x, t);
    }
};

struct Mse {
    template <typename T>
    FD_HD static void eval(T x, T t, T, T& loss, T& grad) {
        const T d = x - t;
        loss = d * d;
        grad = T(2) * d;
    }
};

// torch HuberLoss; the clip lets NaN through (both comparisons are false), as np.clip.
struct Huber {
    template <typename T>
    FD_HD static void eval(T x, T t, T delta, T& loss, T& grad) {
        const T d = x - t;
        const T a = fd::fabs(d);
        loss = a < delta ? T(0.5) * d * d : delta * (a - T(0.5) * delta);
        grad = d > delta ? delta : (d < -delta ? -delta : d);
    }
};

// ------------------------------------------------------------ softmax cross-entropy
// Online softmax statistics: (m, s) with s = sum_k exp(x_k - m) over the elements seen
// and m their maximum; s == 0 marks a state that has seen nothing (a seen element adds
// at least exp(0) = 1, or NaN). s is a double: rows of 32000 float32 terms lose digits
// in float. Partial states merge in any grouping to the same value up to rounding, and
// merge(a, b) == merge(b, a) bit for bit, so the lanes of a butterfly agree exactly.
template <typename T>
FD_HD void softmax_add(T x, T& m, double& s) {
    if (s == 0.0) {
        m = x;
        s = 1.0;
    } else if (x > m) {
        s = s * double(fd::exp(m - x)) + 1.0;
        m = x;
    } else if (x == m) {
        s += 1.0;  // exp(0), and no NaN from -inf - -inf
    } else {
        s += double(fd::exp(x - m));  // NaN x makes s NaN
    }
}

// max with NaN winning from either side, as np.maximum, and symmetric.
template <typename T>
FD_HD T nan_max(T a, T b) {
    return (a > b || a != a) ? a : b;
}

template <typename T>
FD_HD double softmax_rescaled(T m, double s, T to) {
    return m == to ? s : s * double(fd::exp(m - to));  // m == to also for -inf == -inf
}

template <typename T>
FD_HD void softmax_merge(T& m, double& s, T m2, double s2) {
    if (s2 == 0.0) return;
    if (s == 0.0) {
        m = m2;
        s = s2;
        return;
    }
    const T to = nan_max(m, m2);
    s = softmax_rescaled(m, s, to) + softmax_rescaled(m2, s2, to);
    m = to;
}

// The row's s once all its elements are in: NaN when its maximum is not finite, for the
// reference's x - max is then NaN (inf - inf, -inf - -inf) and so is its whole row.
template <typename T>
FD_HD double softmax_row_sum(T m, double s) {
    return fd::finite(m) ? s : double(m - m);
}

// The reference's smoothed target (1 - e) t + e / K with keep = 1 - e, off = e / K in T.
template <typename T>
FD_HD T smoothed_target(T keep, T target, T off) {
    return mul(keep, target) + off;
}

// d loss / d x_k of the reduced loss: (p_k sum_j t_j - t_k) scale with
// p_k sum_j t_j = exp(x_k - m) a, a = sum_j t_j / s rounded to T (kernels/cpu/losses.py).
template <typename T>
FD_HD T cross_entropy_grad(T e, T a, T t, T scale) {
    return (mul(e, a) - t) * scale;
}

// -sum_k t_k log p_k = log s sum_k t_k - sum_k t_k (x_k - m), in double; for class targets
// sum_k t_k (x_k - m) = off sum_{k != y} (x_k - m) + on (x_y - m). Kept apart, the terms
// are non-finite where the reference's are: 0 (-inf) is NaN only for a class other than y.
FD_HD double dense_row_loss(double log_s, double tsum, double sum_td) {
    return log_s * tsum - sum_td;
}

template <typename T>
FD_HD double class_row_loss(double log_s, double tsum, T on, T off, double sum_other, T d_y) {
    return log_s * tsum - double(off) * sum_other - double(on) * double(d_y);
}

// ------------------------------------------------------------------------- argmax
// The first maximum, NaN counting as the largest, as numpy.argmax. A strict total order
// on (value, index), so that merges in any grouping pick the same element. k < 0: none.
template <typename T>
FD_HD bool argmax_before(T v, long long k, T best, long long best_k) {
    if (best_k < 0) return true;
    const bool nan = v != v, best_nan = best != best;
    if (nan || best_nan) return nan && (!best_nan || k < best_k);
    return v > best || (v == best && k < best_k);
}

template <typename T>
FD_HD void argmax_merge(T& best, long long& best_k, T v, long long k) {
    if (k >= 0 && argmax_before(v, k, best, best_k)) {
        best = v;
        best_k = k;
    }
}

}  // namespace loss
}  // namespace fd

#if defined(__CUDACC__)
// ------------------------------------------------------------------- reductions
// Warp reductions are xor butterflies over all 32 lanes (fd::shfl_xor, full mask: callers
// keep every lane of the warp in the call); every lane ends with the same value, bit for bit.
// Block reductions need blockDim.x a multiple of 32 and at most 1024, every thread of the
// block in the call, and give every thread the same value; a fixed tree, so the result
// depends only on the block size, never on timing.
namespace fd {
namespace loss {

template <typename V>
__device__ __forceinline__ V warp_sum(V v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += shfl_xor(v, offset);
    return v;
}

template <typename T>
__device__ __forceinline__ void warp_softmax(T& m, double& s) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const T m2 = shfl_xor(m, offset);
        const double s2 = shfl_xor(s, offset);
        softmax_merge(m, s, m2, s2);
    }
}

template <typename T>
__device__ __forceinline__ void warp_argmax(T& best, long long& best_k) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const T v = shfl_xor(best, offset);
        const long long k = shfl_xor(best_k, offset);
        argmax_merge(best, best_k, v, k);
    }
}

// Each warp reduces, lane 0 posts to shared memory, then every warp reduces the posts
// itself (no broadcast barrier needed). The barrier on entry keeps a previous call's
// readers from seeing this call's posts.
template <typename V>
__device__ V block_sum(V v) {
    __shared__ V posted[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) posted[warp] = v;
    __syncthreads();
    return warp_sum(lane < int(blockDim.x >> 5) ? posted[lane] : V(0));
}

template <typename T>
__device__ void block_softmax(T& m, double& s) {
    __shared__ T posted_m[32];
    __shared__ double posted_s[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    warp_softmax(m, s);
    __syncthreads();
    if (lane == 0) {
        posted_m[warp] = m;
        posted_s[warp] = s;
    }
    __syncthreads();
    const bool posted = lane < int(blockDim.x >> 5);
    m = posted ? posted_m[lane] : T(0);
    s = posted ? posted_s[lane] : 0.0;  // s == 0: the empty state
    warp_softmax(m, s);
}

template <typename T>
__device__ void block_argmax(T& best, long long& best_k) {
    __shared__ T posted_v[32];
    __shared__ long long posted_k[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    warp_argmax(best, best_k);
    __syncthreads();
    if (lane == 0) {
        posted_v[warp] = best;
        posted_k[warp] = best_k;
    }
    __syncthreads();
    const bool posted = lane < int(blockDim.x >> 5);
    best = posted ? posted_v[lane] : T(0);
    best_k = posted ? posted_k[lane] : -1;
    warp_argmax(best, best_k);
}

// Rows of a matrix shared out to groups of threads: one warp per row (WarpRows, narrow
// rows) or the whole block per row (BlockRows, wide rows). A thread of a group handles
// the columns rank(), rank() + size(), ...; reductions run over the group. Row loops
// are uniform over a group, so that its reductions always find every member.
struct WarpRows {
    __device__ static long long first_row() {
        return (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    }
    __device__ static long long row_stride() { return (long long)gridDim.x * (blockDim.x >> 5); }
    __device__ static int rank() { return threadIdx.x & 31; }
    __device__ static int size() { return 32; }
    template <typename V>
    __device__ static V sum(V v) { return warp_sum(v); }
    template <typename T>
    __device__ static void softmax(T& m, double& s) { warp_softmax(m, s); }
    template <typename T>
    __device__ static void argmax(T& best, long long& best_k) { warp_argmax(best, best_k); }
};

struct BlockRows {
    __device__ static long long first_row() { return blockIdx.x; }
    __device__ static long long row_stride() { return gridDim.x; }
    __device__ static int rank() { return threadIdx.x; }
    __device__ static int size() { return blockDim.x; }
    template <typename V>
    __device__ static V sum(V v) { return block_sum(v); }
    template <typename T>
    __device__ static void softmax(T& m, double& s) { block_softmax(m, s); }
    template <typename T>
    __device__ static void argmax(T& best, long long& best_k) { block_argmax(best, best_k); }
};

// The softmax statistics of row x (k columns) over the group, of the values converted
// to A (T for the losses, double for the metrics): m = max_j x_j and
// s = sum_j exp(x_j - m) (NaN where m is not finite).
template <typename G, typename A, typename T>
__device__ void row_softmax(const T* x, long long k, A& m, double& s) {
    m = A(0);
    s = 0.0;
    for (long long j = G::rank(); j < k; j += G::size()) softmax_add(A(x[j]), m, s);
    G::softmax(m, s);
    s = softmax_row_sum(m, s);
}

// The block's total of its threads' values, written by thread 0 as the block's partial
// (which a finishing kernel adds up in a fixed order); every thread of the block calls it.
__device__ inline void post_block_total(double value, double* partials) {
    value = block_sum(value);
    if (threadIdx.x == 0) partials[blockIdx.x] = value;
}

// sum_i partials[i] in a fixed order (strided per thread, then the block tree); every
// thread of the block calls it.
__device__ inline double sum_partials(const double* partials, long long parts) {
    double total = 0.0;
    for (long long i = threadIdx.x; i < parts; i += blockDim.x) total += partials[i];
    return block_sum(total);
}

}  // namespace loss
}  // namespace fd
#endif
