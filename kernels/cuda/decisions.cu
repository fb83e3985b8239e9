// The per-step decisions of kernels/spec.py: guard_update (finite check and clip scales
// of an update) and metric_sums (a batch added to a streaming metric), in double.
//
// Launch shapes (kernels/cuda/decisions.py):
// - guard_update: grid 1, block of a multiple of 32 threads (at most 1024).
// - metric_rows with WarpRows: block of a multiple of 32 threads, one warp per row; with
//   BlockRows (rows wider than 1024): one block per row. Grid: ceil(rows / rows per
//   block), at most MAX_BLOCKS (rows loop). metric_elements: grid-stride over elements.
//   Both write two float64 partials per block: its total and its count.
// - metric_finish: grid 1, block of a multiple of 32 threads; adds the partials in a
//   fixed order to sums[0] and sums[1], so the sums are the same from run to run.
// Static shared memory only (the block reductions of loss_math.cuh, under 1 KiB).
#include "loss_math.cuh"

// The record of kernels/spec.py: status[GUARD_BAD_STEP], [GUARD_REASON], [GUARD_SKIP],
// the reasons, and torch's epsilon of the global norm. decisions.py checks these against
// spec when it is imported.
constexpr int GUARD_BAD_STEP = 0, GUARD_REASON = 1, GUARD_SKIP = 2;
constexpr double REASON_LOSS = 1.0, REASON_GRADIENT = 2.0;
constexpr double CLIP_NORM_EPS = 1e-6;
// kernels/spec.py's METRIC_* codes (checked the same way).
constexpr int METRIC_ACCURACY = 0, METRIC_SQUARED_ERROR = 1, METRIC_ABSOLUTE_ERROR = 2,
              METRIC_CROSS_ENTROPY = 3;

// min(1, clip / sqrt(sq)), 1 where sq == 0; clip = inf gives 1.
__device__ __forceinline__ double clip_factor(double sq, double clip) {
    if (sq == 0.0) return 1.0;
    const double f = clip / fd::sqrt(sq);
    return f < 1.0 ? f : 1.0;
}

// kernels/spec.py's guard_update, for update `step` (0-based), in this order:
// - status[GUARD_BAD_STEP] != 0 (an earlier bad step): status[GUARD_SKIP] = 1, nothing else;
// - total[0] or sum_s sq_norms[s] NaN or Inf: status[GUARD_SKIP] = 1 and, when sticky,
//   status[GUARD_BAD_STEP] = step + 1, status[GUARD_REASON] = REASON_LOSS (the loss is
//   not finite) or REASON_GRADIENT;
// - otherwise status[GUARD_SKIP] = 0 and seg_scale[s] = c_s g with
//   c_s = min(1, clip_norm / sqrt(sq_s)) (1 where sq_s == 0) and
//   g = min(1, clip_global_norm / (sqrt(sum_s sq_s c_s c_s) + CLIP_NORM_EPS)), torch's
//   clip_grad_norm_ (engine/trainer.py's order of operations).
// Every branch is taken by the whole block (it depends on values all threads read).
__global__ void guard_update(const double* total, const double* sq_norms, long long segments,
                             double clip_norm, double clip_global_norm, long long step,
                             int sticky, double* seg_scale, double* status) {
    if (status[GUARD_BAD_STEP] != 0.0) {
        if (threadIdx.x == 0) status[GUARD_SKIP] = 1.0;
        return;
    }
    double sq_sum = 0.0;
    for (long long s = threadIdx.x; s < segments; s += blockDim.x) sq_sum += sq_norms[s];
    sq_sum = fd::loss::block_sum(sq_sum);
    const double loss = total[0];
    if (!fd::finite(loss) || !fd::finite(sq_sum)) {
        if (threadIdx.x == 0) {
            status[GUARD_SKIP] = 1.0;
            if (sticky) {
                status[GUARD_BAD_STEP] = double(step + 1);
                status[GUARD_REASON] = fd::finite(loss) ? REASON_GRADIENT : REASON_LOSS;
            }
        }
        return;
    }
    double clipped = 0.0;
    for (long long s = threadIdx.x; s < segments; s += blockDim.x) {
        const double c = clip_factor(sq_norms[s], clip_norm);
        clipped += sq_norms[s] * c * c;
    }
    clipped = fd::loss::block_sum(clipped);
    const double g = clip_global_norm / (fd::sqrt(clipped) + CLIP_NORM_EPS);
    const double global = g < 1.0 ? g : 1.0;
    for (long long s = threadIdx.x; s < segments; s += blockDim.x)
        seg_scale[s] = clip_factor(sq_norms[s], clip_norm) * global;
    if (threadIdx.x == 0) status[GUARD_SKIP] = 0.0;
}

// Whether row's target counts: a class index in [0, classes) (others, such as an
// ignore_index row, are skipped by accuracy and cross-entropy); a target row always.
__device__ __forceinline__ bool kept_target(const long long* targets, long long row, long long classes) {
    const long long y = targets[row];
    return y >= 0 && y < classes;
}
template <typename T>
__device__ __forceinline__ bool kept_target(const T*, long long, long long) {
    return true;
}

// The class of a row's target: y_i itself, or the first maximum of the target row.
template <typename G, typename T>
__device__ long long target_class(const long long* targets, long long row, long long) {
    return targets[row];
}
template <typename G, typename T>
__device__ long long target_class(const T* targets, long long row, long long k) {
    T best = T(0);
    long long best_k = -1;
    const T* t = targets + row * k;
    for (long long j = G::rank(); j < k; j += G::size()) fd::loss::argmax_merge(best, best_k, t[j], j);
    G::argmax(best, best_k);
    return best_k;
}

// -log softmax(x)_y (class targets, y in [0, k): the caller skips the others) or
// -sum_k t_k log softmax(x)_k (rows), in double, with m, log_s the row's softmax
// statistics of double(x).
template <typename G, typename T>
__device__ double row_cross_entropy(const T* x, const long long* targets, long long row, long long,
                                    double m, double log_s) {
    return log_s - (double(x[targets[row]]) - m);
}
template <typename G, typename T>
__device__ double row_cross_entropy(const T* x, const T* targets, long long row, long long k,
                                    double m, double log_s) {
    const T* t = targets + row * k;
    double tsum = 0.0, sum_td = 0.0;
    for (long long j = G::rank(); j < k; j += G::size()) {
        tsum += double(t[j]);
        sum_td += double(t[j]) * (double(x[j]) - m);
    }
    return fd::loss::dense_row_loss(log_s, G::sum(tsum), G::sum(sum_td));
}

// Rows of scores (n, k > 1) with class targets Y = long long (n,) or rows Y = T (n, k):
// METRIC_ACCURACY adds 1 per row whose first maximum is the target's class,
// METRIC_CROSS_ENTROPY the row's softmax cross-entropy on logits; each counts the rows
// kept (a class outside [0, k) is skipped; the skip is uniform over the row's group).
template <typename T, typename Y, typename G>
__global__ void metric_rows(int kind, const T* scores, const Y* targets, long long n, long long k,
                            double* totals, double* counts) {
    double block_total = 0.0, block_count = 0.0;
    for (long long row = G::first_row(); row < n; row += G::row_stride()) {
        if (!kept_target(targets, row, k)) continue;
        const T* x = scores + row * k;
        double value;
        if (kind == METRIC_ACCURACY) {
            T best = T(0);
            long long best_k = -1;
            for (long long j = G::rank(); j < k; j += G::size()) fd::loss::argmax_merge(best, best_k, x[j], j);
            G::argmax(best, best_k);
            value = best_k == target_class<G, T>(targets, row, k) ? 1.0 : 0.0;
        } else {
            double m, s;
            fd::loss::row_softmax<G>(x, k, m, s);
            value = row_cross_entropy<G>(x, targets, row, k, m, fd::log(s));
        }
        if (G::rank() == 0) {
            block_total += value;
            block_count += 1.0;
        }
    }
    fd::loss::post_block_total(block_total, totals);
    fd::loss::post_block_total(block_count, counts);
}

// Elements i < n of scores and targets (Y = T, or long long class labels for one output):
// METRIC_SQUARED_ERROR (x - t)^2, METRIC_ABSOLUTE_ERROR |x - t|, and for one output
// METRIC_ACCURACY [(x > threshold) == (t > 0.5)] and METRIC_CROSS_ENTROPY the sigmoid
// BCE on logits; in double from the values in T (the threshold compared in T, as NumPy
// compares an array with a Python float). Each counts the elements kept: one output has
// the classes 0 and 1, and a class label outside them is skipped.
template <typename T, typename Y>
__global__ void metric_elements(int kind, const T* scores, const Y* targets, long long n,
                                T threshold, double* totals, double* counts) {
    double block_total = 0.0, block_count = 0.0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        if (!kept_target(targets, i, 2)) continue;
        const double x = double(scores[i]), t = double(targets[i]);
        double value;
        if (kind == METRIC_SQUARED_ERROR) {
            value = (x - t) * (x - t);
        } else if (kind == METRIC_ABSOLUTE_ERROR) {
            value = fd::fabs(x - t);
        } else if (kind == METRIC_CROSS_ENTROPY) {
            value = fd::loss::bce_loss(x, t);
        } else {  // METRIC_ACCURACY
            value = (scores[i] > threshold) == (t > 0.5) ? 1.0 : 0.0;
        }
        block_total += value;
        block_count += 1.0;
    }
    fd::loss::post_block_total(block_total, totals);
    fd::loss::post_block_total(block_count, counts);
}

// sums[0] += the fixed-order sum of the parts totals, sums[1] += that of the parts counts.
__global__ void metric_finish(const double* totals, const double* counts, long long parts, double* sums) {
    const double total = fd::loss::sum_partials(totals, parts);
    const double count = fd::loss::sum_partials(counts, parts);
    if (threadIdx.x == 0) {
        sums[0] += total;
        sums[1] += count;
    }
}
