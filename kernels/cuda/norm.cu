// Batch norm and layer norm as the epilogue of a dense layer's GEMM (kernels/spec.py:
// Backend.norm_forward, norm_backward); kernels/cuda/norm.py launches them after the GEMM
// Z = X @ W (forward) and before dW = X.T @ dZ, dX = dZ @ W.T (backward), cuBLAS calls it
// leaves to the model. All arrays are C-contiguous (n, m) row-major; element (i, j) has the
// flat index k = i * m + j, the index the dropout mask hashes (rng.cuh).
//
// Forward, with H = Z + b, xhat = (H - mu) * rstd, A = gamma * xhat + beta,
// Y = act(A) * keep / (1 - p); statistics in double by two passes (mean, then squared
// deviations from it), mu and rstd = 1 / sqrt(var + eps) rounded to T:
// column_moments<T>: batch norm in training, per chunk c of ``chunk_rows`` rows:
//     moments[0, c, j] = sum_{i in c} H[i, j], moments[1, c, j] = sum_{i in c} (H[i, j] - mean_c)^2
//     (double). grid (ceil(m / 32), chunks), block (32, 8), dynamic shared memory
//     32 * 8 * sizeof(double).
// finish_moments<T>: batch norm, per column: training: mu = sum_c S_c / n,
//     var = sum_c (M2_c + n_c (S_c / n_c - mu)^2) / n (chunks in order), running estimates
//     moved by momentum (the variance unbiased there); evaluation: the running estimates.
//     Writes mean[j] (T) and rstd[j]. grid (ceil(m / 256)), block (256).
// normalize_columns<T>: batch norm, xhat and Y elementwise from mean[j], rstd[j]. grid
//     (min(ceil(n m / 256), 4096)), block (256), grid-stride loop.
// normalize_rows<T>: layer norm, one block per row (grid-stride over rows): the row's
//     statistics by block reductions, rstd[i], then xhat and Y. grid (min(n, 65536)),
//     block (32..256, a power of two), dynamic shared memory blockDim.x * sizeof(double).
//
// Backward, with u = dY * keep / (1 - p), dA = u * act'(A) (A recomputed), dxhat = dA * gamma,
// dH = rstd (dxhat - mean dxhat - xhat mean(dxhat xhat)) over the normalized axis:
// row_sums<T>: layer norm, sums[0, i] = sum_j dxhat[i, j], sums[1, i] = sum_j dxhat xhat.
//     Launch as normalize_rows, shared memory blockDim.x * sizeof(T).
// norm_columns<T>: per chunk of rows and column, any of: the sums of dA, dA xhat and
//     u min(A, 0) (dbeta, dgamma, dslope), and dZ = dH with the sums of dH (db); the means
//     of dH from the row sums above (layer norm) or from the column sums of dA and dA xhat
//     times gamma (batch norm, a first launch of this kernel). Launch as dense.cu's
//     backward_columns, dynamic shared memory 4 * 32 * 8 * sizeof(T); the chunks' sums are
//     added in order by dense.cu's finish_column_sums.
//
// Every sum is taken in an order fixed by the shapes and the launch shape, which the
// caller derives from the shapes only: bitwise the same run to run, whatever the device.
#include "activations.cuh"
#include "reductions.cuh"
#include "rng.cuh"

// xhat[k] = (Z[k] + b[j] - mu) * r and Y[k] = act(gamma[j] xhat[k] + beta[j]) * keep / (1 - p),
// alive[j] = 1 where act > 0 (``alive`` null: none). Z[k] is read before xhat[k] and Y[k]
// are written, xhat before Y: xhat may be Z, and Y may be either (then it holds Y).
template <typename T>
__device__ __forceinline__ void normalize_element(const T* Z, T* xhat, T* Y, long long k,
                                                  long long j, T mu, T r, const T* b,
                                                  const T* gamma, const T* beta, const T* slope,
                                                  int act, T alpha, int dropout,
                                                  unsigned int key_lo, unsigned int key_hi,
                                                  unsigned int threshold, T scale,
                                                  unsigned char* alive) {
    const T x = (Z[k] + b[j] - mu) * r;
    const T unit_slope = act == fd::activation::PRELU ? slope[j] : T(0);
    T y = fd::activate(act, gamma[j] * x + beta[j], alpha, unit_slope);
    if (alive != nullptr && y > T(0)) {
        alive[j] = 1;
    }
    if (dropout) {
        y *= fd::mask_value(k, key_lo, key_hi, threshold, scale);
    }
    xhat[k] = x;
    Y[k] = y;
}

// 1 / sqrt(var + eps) in double, rounded to T.
template <typename T>
__device__ __forceinline__ T inverse_std(double var, double eps) {
    return static_cast<T>(1.0 / sqrt(var + eps));
}

template <typename T>
__global__ void column_moments(const T* Z, const T* b, long long n, long long m,
                               long long chunk_rows, double* moments) {
    double* parts = reinterpret_cast<double*>(shared_bytes);
    const long long j = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long first = static_cast<long long>(blockIdx.y) * chunk_rows;
    const long long end = first + chunk_rows < n ? first + chunk_rows : n;
    const T bias = j < m ? b[j] : T(0);
    double sum[1] = {0.0};
    if (j < m) {
        for (long long i = first + threadIdx.y; i < end; i += blockDim.y) {
            sum[0] += static_cast<double>(Z[i * m + j] + bias);
        }
    }
    fd::column_sums(parts, sum);
    const double mean = sum[0] / static_cast<double>(end - first);
    double squares[1] = {0.0};
    if (j < m) {
        for (long long i = first + threadIdx.y; i < end; i += blockDim.y) {
            const double deviation = static_cast<double>(Z[i * m + j] + bias) - mean;
            squares[0] += deviation * deviation;
        }
    }
    fd::column_sums(parts, squares);
    if (threadIdx.y == 0 && j < m) {
        const long long at = static_cast<long long>(blockIdx.y) * m + j;
        moments[at] = sum[0];
        moments[gridDim.y * m + at] = squares[0];
    }
}

template <typename T>
__global__ void finish_moments(const double* moments, long long chunks, long long n, long long m,
                               long long chunk_rows, int training, double eps, double momentum,
                               T* running_mean, T* running_var, T* mean, T* rstd) {
    const long long j = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (j >= m) {
        return;
    }
    if (!training) {
        mean[j] = running_mean[j];
        rstd[j] = inverse_std<T>(static_cast<double>(running_var[j]), eps);
        return;
    }
    double total = 0.0;
    for (long long c = 0; c < chunks; ++c) {
        total += moments[c * m + j];
    }
    const double mu = total / static_cast<double>(n);
    double squares = 0.0;
    for (long long c = 0; c < chunks; ++c) {
        const long long rows = c == chunks - 1 ? n - c * chunk_rows : chunk_rows;
        const double offset = moments[c * m + j] / static_cast<double>(rows) - mu;
        squares += moments[(chunks + c) * m + j] + static_cast<double>(rows) * offset * offset;
    }
    const double var = squares / static_cast<double>(n);
    mean[j] = static_cast<T>(mu);
    rstd[j] = inverse_std<T>(var, eps);
    running_mean[j] = static_cast<T>((1.0 - momentum) * static_cast<double>(running_mean[j])
                                     + momentum * mu);
    running_var[j] = static_cast<T>((1.0 - momentum) * static_cast<double>(running_var[j])
                                    + momentum * (var * static_cast<double>(n) /
                                                  static_cast<double>(n - 1)));
}

template <typename T>
__global__ void normalize_columns(const T* Z, const T* b, const T* gamma, const T* beta,
                                  const T* slope, const T* mean, const T* rstd, long long total,
                                  long long m, int act, T alpha, int dropout, unsigned int key_lo,
                                  unsigned int key_hi, unsigned int threshold, T scale, T* xhat,
                                  T* Y, unsigned char* alive) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long k = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
         k += stride) {
        const long long j = k % m;
        normalize_element(Z, xhat, Y, k, j, mean[j], rstd[j], b, gamma, beta, slope, act, alpha,
                          dropout, key_lo, key_hi, threshold, scale, alive);
    }
}

template <typename T>
__global__ void normalize_rows(const T* Z, const T* b, const T* gamma, const T* beta,
                               const T* slope, long long n, long long m, double eps, int act,
                               T alpha, int dropout, unsigned int key_lo, unsigned int key_hi,
                               unsigned int threshold, T scale, T* xhat, T* rstd, T* Y,
                               unsigned char* alive) {
    double* buffer = reinterpret_cast<double*>(shared_bytes);
    for (long long row = blockIdx.x; row < n; row += gridDim.x) {
        const T* z = Z + row * m;
        double sum = 0.0;
        for (long long j = threadIdx.x; j < m; j += blockDim.x) {
            sum += static_cast<double>(z[j] + b[j]);
        }
        const double mu = fd::block_reduce(buffer, sum, fd::Plus()) / static_cast<double>(m);
        double squares = 0.0;
        for (long long j = threadIdx.x; j < m; j += blockDim.x) {
            const double deviation = static_cast<double>(z[j] + b[j]) - mu;
            squares += deviation * deviation;
        }
        const double var = fd::block_reduce(buffer, squares, fd::Plus()) / static_cast<double>(m);
        const T r = inverse_std<T>(var, eps);
        if (threadIdx.x == 0) {
            rstd[row] = r;
        }
        for (long long j = threadIdx.x; j < m; j += blockDim.x) {
            normalize_element(Z, xhat, Y, row * m + j, j, static_cast<T>(mu), r, b, gamma, beta,
                              slope, act, alpha, dropout, key_lo, key_hi, threshold, scale, alive);
        }
    }
}

// (u, A, dA) of element k of column j: u = dY * keep / (1 - p), A = gamma xhat + beta,
// dA = u act'(A).
template <typename T>
struct ElementGradient {
    T upstream, a, grad;
};

template <typename T>
__device__ __forceinline__ ElementGradient<T> element_gradient(
    const T* dY, const T* xhat, long long k, long long j, const T* gamma, const T* beta,
    const T* slope, int act, T alpha, int dropout, unsigned int key_lo, unsigned int key_hi,
    unsigned int threshold, T scale) {
    ElementGradient<T> out;
    out.upstream = dY[k];
    if (dropout) {
        out.upstream *= fd::mask_value(k, key_lo, key_hi, threshold, scale);
    }
    out.a = gamma[j] * xhat[k] + beta[j];
    const T unit_slope = act == fd::activation::PRELU ? slope[j] : T(0);
    out.grad = out.upstream * fd::derivative(act, out.a, alpha, unit_slope);
    return out;
}

template <typename T>
__global__ void row_sums(const T* dY, const T* xhat, const T* gamma, const T* beta,
                         const T* slope, long long n, long long m, int act, T alpha, int dropout,
                         unsigned int key_lo, unsigned int key_hi, unsigned int threshold,
                         T scale, T* sums) {
    T* buffer = reinterpret_cast<T*>(shared_bytes);
    for (long long row = blockIdx.x; row < n; row += gridDim.x) {
        T total = T(0);
        T dot = T(0);
        for (long long j = threadIdx.x; j < m; j += blockDim.x) {
            const long long k = row * m + j;
            const T scaled = element_gradient(dY, xhat, k, j, gamma, beta, slope, act, alpha,
                                              dropout, key_lo, key_hi, threshold, scale).grad *
                             gamma[j];
            total += scaled;
            dot += scaled * xhat[k];
        }
        total = fd::block_reduce(buffer, total, fd::Plus());
        dot = fd::block_reduce(buffer, dot, fd::Plus());
        if (threadIdx.x == 0) {
            sums[row] = total;
            sums[n + row] = dot;
        }
    }
}

// The sums of dxhat and dxhat xhat over the normalized axis are ``grad_sums`` and
// ``dot_sums`` at the row (``per_row``: layer norm's row_sums) or, for batch norm, gamma[j]
// times those at the column (the sums of dA and dA xhat). Each of ``dZ`` (with dH),
// ``beta_sums``, ``gamma_sums``, ``slope_sums`` (dA, dA xhat, u min(A, 0)) and ``db_sums``
// (dH), (chunks, m), may be null: not computed. Thread (x, y) owns column
// blockIdx.x * blockDim.x + x and adds rows first + y, first + y + blockDim.y, ... of chunk
// blockIdx.y in order, then the column's blockDim.y partial sums by fd::column_sums.
// dZ may be dY or xhat: each element is read before the same thread writes it.
template <typename T>
__global__ void norm_columns(const T* dY, const T* xhat, const T* gamma, const T* beta,
                             const T* slope, const T* rstd, const T* grad_sums,
                             const T* dot_sums, int per_row, long long n, long long m,
                             long long chunk_rows, int act, T alpha, int dropout,
                             unsigned int key_lo, unsigned int key_hi, unsigned int threshold,
                             T scale, T* dZ, T* beta_sums, T* gamma_sums, T* slope_sums,
                             T* db_sums) {
    const long long j = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long first = static_cast<long long>(blockIdx.y) * chunk_rows;
    const long long end = first + chunk_rows < n ? first + chunk_rows : n;
    const T count = static_cast<T>(per_row ? m : n);
    T totals[4] = {T(0), T(0), T(0), T(0)};  // dbeta, dgamma, dslope, db
    if (j < m) {
        for (long long i = first + threadIdx.y; i < end; i += blockDim.y) {
            const long long k = i * m + j;
            const ElementGradient<T> e = element_gradient(dY, xhat, k, j, gamma, beta, slope, act,
                                                          alpha, dropout, key_lo, key_hi,
                                                          threshold, scale);
            const T x = xhat[k];
            totals[0] += e.grad;
            totals[1] += e.grad * x;
            if (slope_sums != nullptr) {
                totals[2] += e.upstream * (e.a >= T(0) ? T(0) : e.a);  // min(A, 0), NaN kept
            }
            if (dZ != nullptr) {
                const T mean_grad = per_row ? grad_sums[i] / count : gamma[j] * grad_sums[j] / count;
                const T mean_dot = per_row ? dot_sums[i] / count : gamma[j] * dot_sums[j] / count;
                const T r = rstd[per_row ? i : j];
                const T grad_h = r * (e.grad * gamma[j] - mean_grad - x * mean_dot);
                dZ[k] = grad_h;
                totals[3] += grad_h;
            }
        }
    }
    fd::column_sums(reinterpret_cast<T*>(shared_bytes), totals);
    if (threadIdx.y == 0 && j < m) {
        const long long at = static_cast<long long>(blockIdx.y) * m + j;
        T* const targets[4] = {beta_sums, gamma_sums, slope_sums, db_sums};
        for (int q = 0; q < 4; ++q) {
            if (targets[q] != nullptr) {
                targets[q][at] = totals[q];
            }
        }
    }
}
