// The elementwise and column-reduction kernels of the dense layer (kernels/spec.py:
// Backend.dense_forward, dense_backward, dropout_mask, apply_output). The GEMMs around
// them (Z = X @ W, dW = X.T @ dZ, dX = dZ @ W.T) are cuBLAS calls that
// kernels/cuda/gemm.py makes. All arrays are C-contiguous; element
// (i, j) of an (n, m) array has the flat index k = i * m + j, which is also the index the
// dropout mask hashes (rng.cuh). keep / (1 - p) is the scaled keep mask of spec's
// m / (1 - p): ``scale`` (1 / (1 - p) rounded in T by the caller, as the reference rounds
// it) where kept, else 0.
//
// forward_epilogue<T, V>: Z += b, Y = act(Z) * keep / (1 - p), Z holding X @ W, each thread
//     taking V consecutive elements of a row at a time: V = 16 / sizeof(T) (one float4 /
//     double2 load and store per array) when m is a multiple of it and Z, Y, b (and the
//     prelu slope) start on 16 bytes, else V = 1. grid (min(ceil(n m / V / 256), 4096)),
//     block (256), no shared memory; grid-stride loop over the groups of V elements.
//     With ``alive`` (else null): alive[j] = 1 where act(Z[i, j]) > 0.
// backward_columns<T>: upstream = dY * keep / (1 - p), dZ = upstream * act'(Z), and for
//     each chunk c of ``chunk_rows`` rows: sums[c, j] = sum_{i in c} dZ[i, j] and, for prelu,
//     slope_sums[c, j] = sum_{i in c} upstream[i, j] * min(Z[i, j], 0).
//     grid (ceil(m / blockDim.x), chunks), block (32, 8) (blockDim.y a power of two),
//     dynamic shared memory 2 * blockDim.x * blockDim.y * sizeof(T).
// finish_column_sums<T>: db[j] = sum_c sums[c, j] (and dslope from slope_sums), c in order.
//     grid (ceil(m / 256)), block (256), no shared memory.
// backward_elements<T>: dZ = dY * keep / (1 - p) * act'(Z) alone, a frozen layer's backward
//     (no column sums). Grid and block as forward_epilogue.
// dropout_mask<T, V>: out[k] = keep(k) / (1 - p), V elements per thread at a time (V > 1
//     when the size is a multiple of V and out starts on 16 bytes). Grid and block as
//     forward_epilogue.
// sigmoid_elements<T>: out[k] = sigmoid(X[k]). Grid and block as forward_epilogue.
// softmax_rows<T>: out[i] = exp(X[i] - max X[i]) / sum_k exp(X[i, k] - max X[i]).
//     grid (min(n, 65536)), one block per row (grid-stride over rows), block (32..256, a
//     power of two), dynamic shared memory blockDim.x * sizeof(T).
//
// Every sum is taken in an order fixed by the shapes and the launch shape, which the
// caller derives from the shapes only: results are bitwise the same run to run, whatever
// the device's size. No floating-point atomics.
#include "activations.cuh"
#include "reductions.cuh"
#include "rng.cuh"

// Y = act(Z + b) * keep / (1 - p) and Z = Z + b (spec.Backend.dense_forward after the GEMM),
// V elements k, ..., k + V - 1 of one row at a time (m a multiple of V, every array aligned
// to V elements). Y may be Z: a group is read whole before it is written. ``slope`` is
// read for prelu only; ``dropout`` 0 skips the hashing (p = 0, where the reference's mask
// is all ones). Each element hashes its own flat index, whatever V.
// ``alive`` (m flags, or null for none): spec.Backend.dense_forward's units that fired,
// alive[j] = 1 where act(Z[i, j]) > 0 before dropout. Threads only ever store 1 there and
// never read it: the threads of other rows that store to the same flag store the same
// byte, so the flag ends 1 whatever their order, with no atomics and no read to race.
template <typename T, int V>
__global__ void forward_epilogue(T* Z, T* Y, const T* b, const T* slope, long long total,
                                 long long m, int act, T alpha, int dropout,
                                 unsigned int key_lo, unsigned int key_hi,
                                 unsigned int threshold, T scale, unsigned char* alive) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x * V;
    long long k = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
    // The column of k, stepped by stride mod m: one 64-bit division per thread, not per group.
    long long j = k % m;
    const long long j_step = stride % m;
    const bool separate = Y != Z;
    const bool prelu = act == fd::activation::PRELU;
    for (; k < total; k += stride) {
        fd::Pack<T, V> z = fd::load<V>(Z + k);
        const fd::Pack<T, V> bias = fd::load<V>(b + j);
        fd::Pack<T, V> unit_slope{};
        if (prelu) {
            unit_slope = fd::load<V>(slope + j);
        }
        fd::Pack<T, V> y;
        for (int e = 0; e < V; ++e) {
            z.v[e] += bias.v[e];
            y.v[e] = fd::activate(act, z.v[e], alpha, unit_slope.v[e]);
            if (alive != nullptr && y.v[e] > T(0)) {
                alive[j + e] = 1;
            }
            if (dropout) {
                y.v[e] *= fd::mask_value(k + e, key_lo, key_hi, threshold, scale);
            }
        }
        if (separate) {
            fd::store<V>(Z + k, z);
        }
        fd::store<V>(Y + k, y);
        j += j_step;
        if (j >= m) {
            j -= m;
        }
    }
}

// dZ = dY * keep / (1 - p) * act'(Z) and the per-chunk column sums of dZ (and of prelu's
// dY * keep / (1 - p) * min(Z, 0)) into row blockIdx.y of ``sums`` (``slope_sums``), both
// (chunks, m).
// Thread (x, y) of a block owns column j = blockIdx.x * blockDim.x + x and adds rows
// first + y, first + y + blockDim.y, ... in order; the blockDim.y partial sums of a column
// are then added by a tree in shared memory (fd::column_sums). A warp reads 32 adjacent
// elements of a row.
// dZ may be dY or Z: each element is read before the same thread writes it.
template <typename T>
__global__ void backward_columns(const T* dY, const T* Z, T* dZ, const T* slope, long long n,
                                 long long m, long long chunk_rows, int act, T alpha, int dropout,
                                 unsigned int key_lo, unsigned int key_hi, unsigned int threshold,
                                 T scale, T* sums, T* slope_sums) {
    const bool prelu = act == fd::activation::PRELU;
    const long long j = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long first = static_cast<long long>(blockIdx.y) * chunk_rows;
    const long long end = first + chunk_rows < n ? first + chunk_rows : n;
    T column_sum = T(0);
    T slope_sum = T(0);
    if (j < m) {
        const T unit_slope = prelu ? slope[j] : T(0);
        for (long long i = first + threadIdx.y; i < end; i += blockDim.y) {
            const long long k = i * m + j;
            T upstream = dY[k];
            if (dropout) {
                upstream *= fd::mask_value(k, key_lo, key_hi, threshold, scale);
            }
            const T z = Z[k];
            const T grad = upstream * fd::derivative(act, z, alpha, unit_slope);
            dZ[k] = grad;
            column_sum += grad;
            if (prelu) {
                slope_sum += upstream * (z >= T(0) ? T(0) : z);  // min(Z, 0), NaN kept
            }
        }
    }
    T totals[2] = {column_sum, slope_sum};
    fd::column_sums(reinterpret_cast<T*>(shared_bytes), totals);
    if (threadIdx.y == 0 && j < m) {
        const long long at = static_cast<long long>(blockIdx.y) * m + j;
        sums[at] = totals[0];
        if (prelu) {
            slope_sums[at] = totals[1];
        }
    }
}

// db[j] = sum_c partials[c, j] and, when ``prelu``, dslope[j] = sum_c partials[chunks + c, j],
// c = 0, 1, ... in order: the second pass of backward_columns when it ran in several chunks.
template <typename T>
__global__ void finish_column_sums(const T* partials, long long chunks, long long m, int prelu,
                                   T* db, T* dslope) {
    const long long j = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (j >= m) {
        return;
    }
    T sum = T(0);
    for (long long c = 0; c < chunks; ++c) {
        sum += partials[c * m + j];
    }
    db[j] = sum;
    if (prelu) {
        sum = T(0);
        for (long long c = chunks; c < 2 * chunks; ++c) {
            sum += partials[c * m + j];
        }
        dslope[j] = sum;
    }
}

// dZ[k] = dY[k] * keep(k) / (1 - p) * act'(Z[k]) over the ``total`` = n m elements of a frozen
// layer (spec.Backend.dense_backward with dW, db and dslope None): backward_columns without
// the sums. ``slope`` (m) is read for prelu only. dZ may be dY or Z: each element is read
// before the same thread writes it.
template <typename T>
__global__ void backward_elements(const T* dY, const T* Z, T* dZ, const T* slope, long long total,
                                  long long m, int act, T alpha, int dropout, unsigned int key_lo,
                                  unsigned int key_hi, unsigned int threshold, T scale) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    const bool prelu = act == fd::activation::PRELU;
    for (long long k = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
         k += stride) {
        T upstream = dY[k];
        if (dropout) {
            upstream *= fd::mask_value(k, key_lo, key_hi, threshold, scale);
        }
        dZ[k] = upstream * fd::derivative(act, Z[k], alpha, prelu ? slope[k % m] : T(0));
    }
}

// out[k] = keep(k) / (1 - p) (spec.Backend.dropout_mask), V elements at a time (total a
// multiple of V, out aligned to V elements).
template <typename T, int V>
__global__ void dropout_mask(T* out, long long total, unsigned int key_lo, unsigned int key_hi,
                             unsigned int threshold, T scale) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x * V;
    for (long long k = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
         k < total; k += stride) {
        fd::Pack<T, V> mask;
        for (int e = 0; e < V; ++e) {
            mask.v[e] = fd::mask_value(k + e, key_lo, key_hi, threshold, scale);
        }
        fd::store<V>(out + k, mask);
    }
}

// out[k] = sigmoid(X[k]) (apply_output's OUTPUT_SIGMOID). out may be X.
template <typename T>
__global__ void sigmoid_elements(const T* X, T* out, long long total) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long k = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
         k += stride) {
        out[k] = fd::sigmoid(X[k]);
    }
}

// The larger of a and b, NaN if either is (np.max propagates NaN; fmax would drop it).
struct NanMax {
    template <typename T>
    __device__ T operator()(T a, T b) const { return (b > a || b != b) ? b : a; }
};

// Row-wise softmax of X (n, k) into out (apply_output's OUTPUT_SOFTMAX), as the reference:
// exp(x - max) / sum exp(x - max), a division. out may be X: each element is read and
// written by the same thread, and the row's max is taken before any is written.
template <typename T>
__global__ void softmax_rows(const T* X, T* out, long long n, long long k) {
    T* buffer = reinterpret_cast<T*>(shared_bytes);
    for (long long row = blockIdx.x; row < n; row += gridDim.x) {
        const T* x = X + row * k;
        T* y = out + row * k;
        T top = x[0];  // a start every thread has, so the max needs no identity element
        for (long long c = threadIdx.x; c < k; c += blockDim.x) {
            top = NanMax()(top, x[c]);
        }
        top = fd::block_reduce(buffer, top, NanMax());
        T sum = T(0);
        for (long long c = threadIdx.x; c < k; c += blockDim.x) {
            const T e = fd::exp(x[c] - top);
            y[c] = e;
            sum += e;
        }
        sum = fd::block_reduce(buffer, sum, fd::Plus());
        for (long long c = threadIdx.x; c < k; c += blockDim.x) {
            y[c] = y[c] / sum;
        }
    }
}
