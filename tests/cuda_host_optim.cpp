// Host entry points of kernels/cuda/optim_math.cuh (and constraints.cuh's max_norm) for
// tests/test_cuda_host_optim.py.
//
// Each <kernel>_<f32|f64> takes the grid it stands for (update: `threads`, norm partials:
// `blocks`) and then exactly the parameters of the kernel of the same name in
// kernels/cuda/optim.cu, and runs the kernel's body thread after thread: the update's
// grid-stride loop for thread = 0 .. threads - 1; each norm block's piece walk with a plain
// sum per piece (the device sums by a shuffle tree, which only changes rounding).
// With diagnostics (`partials` not null), `threads` are those of each block, and the
// blocks the chunks of n: each block's threads run update_chunk one after the other, their
// sums of each piece added in thread order (the device's tree only changes rounding).
// sq_norm_totals and update_tally_totals take the kernel's parameters alone: one pass
// over the segments.
#include "constraints.cuh"
#include "optim_math.cuh"

namespace fc = fd::constraints;
namespace fo = fd::optim;

template <typename T, typename Op>
static void run(OPTIM_FLAT_PARAMS(T), double* partials, long long chunk, long long threads,
                const Op& op) {
    if (partials == nullptr) {
        for (long long thread = 0; thread < threads; ++thread)
            fo::update(OPTIM_FLAT_ARGS, thread, threads, op);
        return;
    }
    if (fo::skip_update(skip)) return;
    const fo::Flat<T> b{params, grads, state1, state2, state3, offsets, segments, seg_scale,
                        seg_decay, n, clip_value, seg_l1, l1_lr, l1_rule};
    const long long slots = fo::tally_slots(n, chunk, segments);
    for (long long block = 0; block < slots - segments; ++block) {
        const long long start = block * chunk;
        const long long stop = start + chunk < n ? start + chunk : n;
        fo::for_each_piece(offsets, segments, start, stop, [&](long long s, long long, long long) {
            partials[fo::partial_slot(block, s)] = 0.0;
            partials[slots + fo::partial_slot(block, s)] = 0.0;
        });
        for (long long thread = 0; thread < threads; ++thread)
            fo::update_chunk(b, chunk, block, thread, threads, op,
                             [&](long long s, const fo::Tally& tally) {
                partials[fo::partial_slot(block, s)] += tally.change_sq;
                partials[slots + fo::partial_slot(block, s)] += tally.param_sq;
            });
    }
}

template <typename T>
static void norm_partials(long long blocks, T* grads, const long long* offsets,
                          long long segments, long long n, long long chunk, T clip_value,
                          double* partials, const T* params, const double* seg_l1,
                          const double* seg_l2, int l1_in_gradient) {
    const long long slots = blocks + segments;
    for (long long block = 0; block < blocks; ++block) {
        const long long start = block * chunk;
        const long long stop = start + chunk < n ? start + chunk : n;
        fo::for_each_piece(offsets, segments, start, stop,
                           [&](long long s, long long begin, long long end) {
            double sum = 0.0, param_sq = 0.0, param_abs = 0.0;
            for (long long i = begin; i < end; ++i) {
                if (params != nullptr) {
                    grads[i] = fo::penalized_grad(grads[i], params[i], T(seg_l2[s]), T(seg_l1[s]),
                                                  l1_in_gradient != 0);
                    param_sq += double(params[i]) * double(params[i]);
                    param_abs += fd::fabs(double(params[i]));
                }
                sum += fo::clipped_square(grads[i], clip_value);
            }
            partials[fo::partial_slot(block, s)] = sum;
            if (params != nullptr) {
                partials[slots + fo::partial_slot(block, s)] = param_sq;
                partials[2 * slots + fo::partial_slot(block, s)] = param_abs;
            }
        });
    }
}

// max_norm_columns of constraints.cu, column after column: each column's ROW_LANES
// partials (fc::column_sq_partial), added by the kernel's pairwise tree, then rescaled.
template <typename T>
static void max_norm_columns(T* W, long long rows, long long cols, double max_norm_value,
                             double eps) {
    for (long long j = 0; j < cols; ++j) {
        double sums[fc::ROW_LANES];
        for (int lane = 0; lane < fc::ROW_LANES; ++lane)
            sums[lane] = fc::column_sq_partial(W, rows, cols, j, lane, fc::ROW_LANES);
        for (int half = fc::ROW_LANES / 2; half > 0; half /= 2)
            for (int lane = 0; lane < half; ++lane) sums[lane] += sums[lane + half];
        const double factor = fc::max_norm_factor(sums[0], max_norm_value, eps);
        for (long long i = 0; i < rows; ++i) W[i * cols + j] = fc::rescaled(W[i * cols + j], factor);
    }
}

#define OPTIM_HOST_ENTRIES(T, suffix)                                                          \
    extern "C" void sgd_step_##suffix(long long threads, OPTIM_FLAT_PARAMS(T),                 \
                                      OPTIM_TALLY_PARAMS, T lr, T momentum,                    \
                                      T one_minus_dampening, int use_momentum, int nesterov,   \
                                      int first_step, int decoupled) {                         \
        run(OPTIM_FLAT_ARGS, partials, chunk, threads,                                         \
            fo::Sgd<T>{lr, momentum, one_minus_dampening, use_momentum != 0, nesterov != 0,    \
                       first_step != 0, decoupled != 0});                                      \
    }                                                                                          \
    extern "C" void adagrad_step_##suffix(long long threads, OPTIM_FLAT_PARAMS(T),             \
                                          OPTIM_TALLY_PARAMS, T lr, T eps) {                   \
        run(OPTIM_FLAT_ARGS, partials, chunk, threads, fo::Adagrad<T>{lr, eps});               \
    }                                                                                          \
    extern "C" void rmsprop_step_##suffix(long long threads, OPTIM_FLAT_PARAMS(T),             \
                                          OPTIM_TALLY_PARAMS, T lr, T alpha,                   \
                                          T one_minus_alpha, T eps, T momentum, int centered,  \
                                          int use_momentum) {                                  \
        run(OPTIM_FLAT_ARGS, partials, chunk, threads,                                         \
            fo::Rmsprop<T>{lr, alpha, one_minus_alpha, eps, momentum, centered != 0,           \
                           use_momentum != 0});                                                \
    }                                                                                          \
    extern "C" void adadelta_step_##suffix(long long threads, OPTIM_FLAT_PARAMS(T),            \
                                           OPTIM_TALLY_PARAMS, T lr, T rho, T one_minus_rho,   \
                                           T eps) {                                            \
        run(OPTIM_FLAT_ARGS, partials, chunk, threads,                                         \
            fo::Adadelta<T>{lr, rho, one_minus_rho, eps});                                     \
    }                                                                                          \
    extern "C" void adam_step_##suffix(long long threads, OPTIM_FLAT_PARAMS(T),                \
                                       OPTIM_TALLY_PARAMS, T lr, T beta1, T one_minus_beta1,   \
                                       T beta2, T one_minus_beta2, T eps, T step_size,         \
                                       T sqrt_bc2, int decoupled, int amsgrad) {               \
        run(OPTIM_FLAT_ARGS, partials, chunk, threads,                                         \
            fo::Adam<T>{lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, step_size,    \
                        sqrt_bc2, decoupled != 0, amsgrad != 0});                              \
    }                                                                                          \
    extern "C" void nadam_step_##suffix(long long threads, OPTIM_FLAT_PARAMS(T),               \
                                        OPTIM_TALLY_PARAMS, T beta1, T one_minus_beta1,        \
                                        T beta2, T one_minus_beta2, T eps, T bc2,              \
                                        T grad_coef, T avg_coef) {                             \
        run(OPTIM_FLAT_ARGS, partials, chunk, threads,                                         \
            fo::Nadam<T>{beta1, one_minus_beta1, beta2, one_minus_beta2, eps, bc2, grad_coef,  \
                         avg_coef});                                                           \
    }                                                                                          \
    extern "C" void sq_norm_partials_##suffix(long long blocks, T* grads,                      \
                                              const long long* offsets, long long segments,    \
                                              long long n, long long chunk, T clip_value,      \
                                              double* partials, const T* params,               \
                                              const double* seg_l1, const double* seg_l2,      \
                                              int l1_in_gradient) {                            \
        norm_partials(blocks, grads, offsets, segments, n, chunk, clip_value, partials, params, \
                      seg_l1, seg_l2, l1_in_gradient);                                         \
    }                                                                                          \
    extern "C" void max_norm_columns_##suffix(T* W, long long rows, long long cols,            \
                                              double max_norm_value, double eps) {             \
        max_norm_columns(W, rows, cols, max_norm_value, eps);                                  \
    }

OPTIM_HOST_ENTRIES(float, f32)
OPTIM_HOST_ENTRIES(double, f64)

extern "C" void sq_norm_totals(const double* partials, const long long* offsets,
                               long long segments, long long chunk, long long blocks,
                               double* out, double* acc, const double* seg_l1,
                               const double* seg_l2, double* total) {
    for (long long s = 0; s < segments; ++s) {
        out[s] = fo::sq_norm_total(partials, offsets, s, chunk, blocks);
        if (acc != nullptr) acc[s] += out[s];
    }
    if (segments > 0 && total != nullptr)
        total[0] += fo::penalty_total(partials, offsets, segments, chunk, blocks, seg_l1, seg_l2);
}

extern "C" void update_tally_totals(const double* partials, const long long* offsets,
                                    long long segments, long long n, long long chunk,
                                    const double* skip, double* diag) {
    if (fo::skip_update(skip)) return;
    for (long long s = 0; s < segments; ++s)
        fo::add_tally_total(partials, offsets, segments, s, n, chunk, diag);
}

// out[i] = the segment of element i, for i in [0, n).
extern "C" void segment_of_each(const long long* offsets, long long segments, long long n,
                                long long* out) {
    for (long long i = 0; i < n; ++i) out[i] = fo::segment_of(offsets, segments, i);
}
