// The losses of kernels/spec.py (softmax_cross_entropy, binary_cross_entropy, mse, huber):
// per-sample losses, the gradient of the reduced loss and the reduced loss itself, with
// the formulas of loss_math.cuh.
//
// Each loss kernel writes one float64 partial per block, the sum of its samples' losses
// (each rounded to T, as the reference sums them); finish_loss then adds the partials in
// a fixed order, so that the total is the same from run to run.
//
// Launch shapes (kernels/cuda/losses.py):
// - count_targets: grid 1, block COUNT_THREADS; no dynamic shared memory.
// - cross_entropy_classes / cross_entropy_dense with WarpRows: block of a multiple of 32
//   threads, one warp per row; with BlockRows (rows wider than 1024): one block per row.
//   Grid: ceil(rows / rows per block), at most MAX_BLOCKS (rows loop); static shared
//   memory only (the block reductions of loss_math.cuh, under 1 KiB).
// - elementwise_loss: block of a multiple of 32 threads, grid-stride loop over elements.
// - finish_loss: grid 1, block of a multiple of 32 threads.
#include "loss_math.cuh"

using fd::loss::BlockRows;
using fd::loss::WarpRows;

// counts[0] = rows with a target in [0, k), counts[1] = rows whose target is neither in
// [0, k) nor ignore_index. The kept count is what a MEAN divides by; the gradient kernel
// reads it from here, so that no count comes back to the host first.
__global__ void count_targets(const long long* targets, long long n, long long k,
                              long long ignore_index, long long* counts) {
    long long kept = 0, bad = 0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const long long y = targets[i];
        if (y == ignore_index) continue;
        if (y >= 0 && y < k)
            ++kept;
        else
            ++bad;
    }
    kept = fd::loss::block_sum(kept);
    bad = fd::loss::block_sum(bad);
    if (threadIdx.x == 0) {
        counts[0] = kept;
        counts[1] = bad;
    }
}

// Class targets y (n,): t = on at y, off elsewhere (on = (1 - e) + e / K, off = e / K,
// rounded to T by the caller as the reference rounds its t). Per row, with (m, s) the
// softmax statistics: loss = log s tsum - off sum_{k != y} (x_k - m) - on (x_y - m) and
// grad_k = (exp(x_k - m) a - t_k) scale, a = tsum / s. scale = 1, or for a MEAN
// 1 / counts[0] (0 when no row is kept: the loss is then NaN, the gradient 0, as torch).
// Rows with y == ignore_index give loss and gradient 0; a y outside [0, k) gives NaN in
// both (the host raises for it when it reads the total; otherwise the total is NaN).
// losses, grad and weights may be null. With weights, row i's loss is T(loss) w_i and its
// gradient takes w_i scale in place of scale (no weights: w_i = 1, products exact).
// A row's loss, rounded to T as the reference keeps it, into ``losses`` (when given) and
// the block's running total, by the first thread of the row's group.
template <typename G, typename T>
__device__ __forceinline__ void post_row_loss(T loss, T* losses, long long row, double& block_total) {
    if (G::rank() == 0) {
        if (losses) losses[row] = loss;
        block_total += double(loss);
    }
}

template <typename T, typename G>
__global__ void cross_entropy_classes(const T* logits, const long long* targets, long long n,
                                      long long k, long long ignore_index, T on, T off,
                                      const long long* counts, int mean, const T* weights,
                                      T* losses, T* grad, double* partials) {
    T scale = T(1);
    if (mean) {
        const long long kept = counts[0];
        scale = kept > 0 ? T(1.0 / double(kept)) : T(0);
    }
    const double tsum = double(on) + double(k - 1) * double(off);
    double block_total = 0.0;
    for (long long row = G::first_row(); row < n; row += G::row_stride()) {
        const T* x = logits + row * k;
        T* g = grad ? grad + row * k : nullptr;
        const long long y = targets[row];
        const T w = weights ? weights[row] : T(1);
        const T factor = fd::mul(w, scale);
        double loss;
        if (y == ignore_index || y < 0 || y >= k) {
            const bool ignored = y == ignore_index;
            loss = ignored ? 0.0 : fd::loss::quiet_nan<double>();
            if (g) {
                const T fill = ignored ? T(0) : fd::loss::quiet_nan<T>();
                for (long long j = G::rank(); j < k; j += G::size()) g[j] = fill;
            }
        } else {
            const T x_y = x[y];
            T m;
            double s;
            fd::loss::row_softmax<G>(x, k, m, s);
            // sum_other is needed even when off == 0: off sum_other is then NaN where a
            // logit other than x_y is -inf, as the reference's 0 log 0.
            const T a = T(tsum / s);
            double sum_other = 0.0;
            for (long long j = G::rank(); j < k; j += G::size()) {
                const T d = x[j] - m;
                if (j != y) sum_other += double(d);
                if (g) g[j] = fd::loss::cross_entropy_grad(fd::exp(d), a, j == y ? on : off, factor);
            }
            sum_other = G::sum(sum_other);
            loss = fd::loss::class_row_loss(fd::log(s), tsum, on, off, sum_other, x_y - m);
        }
        post_row_loss<G>(fd::mul(T(loss), w), losses, row, block_total);
    }
    fd::loss::post_block_total(block_total, partials);
}

// Distribution targets (n, k): t_k = keep targets_k + off (keep = 1 - e, off = e / K).
// Per row: loss = log s sum_k t_k - sum_k t_k (x_k - m), grad_k = (exp(x_k - m) a - t_k)
// scale with a = sum_k t_k / s; scale is 1, or 1 / n for a MEAN (given by the caller);
// weights (may be null) as in cross_entropy_classes.
template <typename T, typename G>
__global__ void cross_entropy_dense(const T* logits, const T* targets, long long n, long long k,
                                    T keep, T off, T scale, const T* weights, T* losses, T* grad,
                                    double* partials) {
    double block_total = 0.0;
    for (long long row = G::first_row(); row < n; row += G::row_stride()) {
        const T* x = logits + row * k;
        const T* t = targets + row * k;
        T* g = grad ? grad + row * k : nullptr;
        const T w = weights ? weights[row] : T(1);
        const T factor = fd::mul(w, scale);
        T m;
        double s;
        fd::loss::row_softmax<G>(x, k, m, s);
        double tsum = 0.0;
        for (long long j = G::rank(); j < k; j += G::size())
            tsum += double(fd::loss::smoothed_target(keep, t[j], off));
        tsum = G::sum(tsum);
        const T a = T(tsum / s);
        double sum_td = 0.0;
        for (long long j = G::rank(); j < k; j += G::size()) {
            const T d = x[j] - m;
            const T t_j = fd::loss::smoothed_target(keep, t[j], off);
            sum_td += double(t_j) * double(d);
            if (g) g[j] = fd::loss::cross_entropy_grad(fd::exp(d), a, t_j, factor);
        }
        sum_td = G::sum(sum_td);
        const double loss = fd::loss::dense_row_loss(fd::log(s), tsum, sum_td);
        post_row_loss<G>(fd::mul(T(loss), w), losses, row, block_total);
    }
    fd::loss::post_block_total(block_total, partials);
}

// losses_i = l(pred_i, targets_i) w, grad_i = dl/dx (pred_i, targets_i) (w scale) over n
// elements (L: fd::loss::Bce, Mse or Huber); scale is 1, or 1 / n for a MEAN. w is the
// weight of element i's row, weights[i / row_size], or 1 when weights is null.
template <typename T, typename L>
__global__ void elementwise_loss(const T* pred, const T* targets, long long n, T delta, T scale,
                                 const T* weights, long long row_size, T* losses, T* grad,
                                 double* partials) {
    double block_total = 0.0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        T loss, g;
        L::eval(pred[i], targets[i], delta, loss, g);
        const T w = weights ? weights[i / row_size] : T(1);
        loss = fd::mul(loss, w);
        if (losses) losses[i] = loss;
        if (grad) grad[i] = g * fd::mul(w, scale);
        block_total += double(loss);
    }
    fd::loss::post_block_total(block_total, partials);
}

// total[0] = S = the fixed-order sum of the parts partials, or for a MEAN S / count with
// count = counts[0] when counts is given (class targets) else `count`; a MEAN over no
// sample is NaN. bad[0] (when bad is given) = counts[1], the rows with a bad target.
__global__ void finish_loss(const double* partials, long long parts, const long long* counts,
                            double count, int mean, double* total, double* bad) {
    const double sum = fd::loss::sum_partials(partials, parts);
    if (threadIdx.x != 0) return;
    if (counts) count = double(counts[0]);
    total[0] = !mean ? sum : (count > 0.0 ? sum / count : fd::loss::quiet_nan<double>());
    if (bad) bad[0] = counts ? double(counts[1]) : 0.0;
}
