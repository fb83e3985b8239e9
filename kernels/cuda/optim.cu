// Optimizer updates and gradient norms over the flat parameter buffer: the ops sgd,
// adagrad, rmsprop, adadelta, adam, nadam and grad_sq_norms of kernels/spec.py, with the
// per-element formulas in optim_math.cuh.
//
// Updates, one launch per step: <name>_step<T>, grid min(ceil(units / block), cap) x block
// (optim.py: 256 threads, no shared memory), a grid-stride loop over units of 16 bytes
// (4 floats, 2 doubles) when every buffer is 16-byte aligned, else single elements. Every
// element finds its segment in `offsets`; a step whose status says skip returns at once.
//
// With kernels.spec's diag (`partials` not null), the same kernel runs in the layout of the
// norms below instead (grid = blocks of `chunk` elements, block x 8 bytes of dynamic shared
// memory; optim_math.cuh's update_chunk): each block's sums of (p' - p)^2 and p^2 per
// segment piece go to `partials` by the same pairwise tree, then update_tally_totals,
// grid ceil(S / block) x block, adds them to diag[s] in block order. Deterministic, no
// atomics; the choice is a kernel argument, the same for the whole grid.
//
// Norms: sq_norm_partials<T>, grid = blocks (at most 1024) x block (a power of two, 256),
// block x 8 bytes of dynamic shared memory: block b sums clip(g)^2 in double over its chunk
// of the buffer, one partial per segment piece, in a fixed order (threads stride the piece,
// then a pairwise tree in shared memory). Then sq_norm_totals, grid ceil(S / block) x
// block: thread s adds segment s's partials in block order. No atomics: the result is the
// same bits on every run.
#include "optim_math.cuh"

namespace fo = fd::optim;

// The grid-stride loop of fo::update runs over every thread of the grid.
__device__ __forceinline__ long long grid_thread() {
    return blockIdx.x * (long long)blockDim.x + threadIdx.x;
}

__device__ __forceinline__ long long grid_threads() {
    return (long long)gridDim.x * blockDim.x;
}

// The sum of v over the block in a fixed order, a pairwise tree in shared memory (`sums`:
// blockDim.x doubles, blockDim.x a power of two); every thread gets it. All threads of the
// block call it (it synchronises). Shared memory rather than warp shuffles: the PTX
// emulator that can run these kernels without a GPU (DESIGN.md) has no shuffles, and one
// sum per segment piece of a block costs nothing next to the pass over its chunk.
__device__ __forceinline__ double block_sum(double v, double* sums) {
    const unsigned int t = threadIdx.x;
    sums[t] = v;
    __syncthreads();
    for (unsigned int half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half) sums[t] += sums[t + half];
        __syncthreads();
    }
    const double total = sums[0];
    __syncthreads();  // sums is written again by the next call
    return total;
}

// The body of every update kernel: the grid-stride update without diagnostics (`partials`
// null), else the update of this block's chunk with its sums (see the top of this file).
// A skipped step leaves every thread of the grid at once, before any barrier.
template <typename T, typename Op>
__device__ __forceinline__ void step(OPTIM_FLAT_PARAMS(T), OPTIM_TALLY_PARAMS, const Op& op) {
    if (partials == nullptr) {
        fo::update(OPTIM_FLAT_ARGS, grid_thread(), grid_threads(), op);
        return;
    }
    if (fo::skip_update(skip)) return;
    extern __shared__ double sums[];
    const fo::Flat<T> b{params, grads, state1, state2, state3, offsets, segments, seg_scale,
                        seg_decay, n, clip_value, seg_l1, l1_lr, l1_rule};
    const long long slots = fo::tally_slots(n, chunk, segments);
    fo::update_chunk(b, chunk, blockIdx.x, threadIdx.x, blockDim.x, op,
                     [&](long long s, const fo::Tally& tally) {
        const double change_sq = block_sum(tally.change_sq, sums);
        const double param_sq = block_sum(tally.param_sq, sums);
        if (threadIdx.x == 0) {
            partials[fo::partial_slot(blockIdx.x, s)] = change_sq;
            partials[slots + fo::partial_slot(blockIdx.x, s)] = param_sq;
        }
    });
}

// Slot 1: momentum_buf (null without momentum).
template <typename T>
__global__ void sgd_step(OPTIM_FLAT_PARAMS(T), OPTIM_TALLY_PARAMS, T lr, T momentum,
                         T one_minus_dampening, int use_momentum, int nesterov, int first_step,
                         int decoupled) {
    step(OPTIM_FLAT_ARGS, partials, chunk,
         fo::Sgd<T>{lr, momentum, one_minus_dampening, use_momentum != 0, nesterov != 0,
                    first_step != 0, decoupled != 0});
}

// Slot 1: state_sum.
template <typename T>
__global__ void adagrad_step(OPTIM_FLAT_PARAMS(T), OPTIM_TALLY_PARAMS, T lr, T eps) {
    step(OPTIM_FLAT_ARGS, partials, chunk, fo::Adagrad<T>{lr, eps});
}

// Slots: square_avg, grad_avg (null unless centered), momentum_buf (null without momentum).
template <typename T>
__global__ void rmsprop_step(OPTIM_FLAT_PARAMS(T), OPTIM_TALLY_PARAMS, T lr, T alpha,
                             T one_minus_alpha, T eps, T momentum, int centered,
                             int use_momentum) {
    step(OPTIM_FLAT_ARGS, partials, chunk,
         fo::Rmsprop<T>{lr, alpha, one_minus_alpha, eps, momentum, centered != 0,
                        use_momentum != 0});
}

// Slots: square_avg, acc_delta.
template <typename T>
__global__ void adadelta_step(OPTIM_FLAT_PARAMS(T), OPTIM_TALLY_PARAMS, T lr, T rho,
                              T one_minus_rho, T eps) {
    step(OPTIM_FLAT_ARGS, partials, chunk, fo::Adadelta<T>{lr, rho, one_minus_rho, eps});
}

// Slots: exp_avg, exp_avg_sq, max_exp_avg_sq (null without amsgrad).
template <typename T>
__global__ void adam_step(OPTIM_FLAT_PARAMS(T), OPTIM_TALLY_PARAMS, T lr, T beta1,
                          T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T step_size,
                          T sqrt_bc2, int decoupled, int amsgrad) {
    step(OPTIM_FLAT_ARGS, partials, chunk,
         fo::Adam<T>{lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, step_size,
                     sqrt_bc2, decoupled != 0, amsgrad != 0});
}

// Slots: exp_avg, exp_avg_sq.
template <typename T>
__global__ void nadam_step(OPTIM_FLAT_PARAMS(T), OPTIM_TALLY_PARAMS, T beta1,
                           T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T bc2,
                           T grad_coef, T avg_coef) {
    step(OPTIM_FLAT_ARGS, partials, chunk,
         fo::Nadam<T>{beta1, one_minus_beta1, beta2, one_minus_beta2, eps, bc2, grad_coef,
                      avg_coef});
}

// diag[s] (a row of kernels.spec's (S, 2) diag) += segment s's partials of an update with
// diagnostics over n elements, unless the step was skipped (then nothing was written).
__global__ void update_tally_totals(const double* partials, const long long* offsets,
                                    long long segments, long long n, long long chunk,
                                    const double* skip, double* diag) {
    const long long s = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (s < segments && !fo::skip_update(skip))
        fo::add_tally_total(partials, offsets, segments, s, n, chunk, diag);
}

// Block b: partials[partial_slot(b, s)] = sum of clip(g)^2 over its piece of segment s, for
// the pieces of [b chunk, min(n, (b + 1) chunk)). The piece walk is the same for every
// thread of the block, so all of them reach block_sum's barriers. With `params` (null:
// no penalty), each gradient first becomes fo::penalized_grad (written back), and the
// piece's sums of p^2 and |p| go to the same slot of the partials' second and third halves
// (fo::penalty_total); `params` is the same for the whole grid, so all threads still meet.
template <typename T>
__global__ void sq_norm_partials(T* grads, const long long* offsets, long long segments,
                                 long long n, long long chunk, T clip_value, double* partials,
                                 const T* params, const double* seg_l1, const double* seg_l2,
                                 int l1_in_gradient) {
    extern __shared__ double sums[];
    const long long start = blockIdx.x * chunk;
    const long long stop = start + chunk < n ? start + chunk : n;
    const long long slots = gridDim.x + segments;
    fo::for_each_piece(offsets, segments, start, stop,
                       [&](long long s, long long begin, long long end) {
        double sum = 0.0, param_sq = 0.0, param_abs = 0.0;
        if (params == nullptr) {
            for (long long i = begin + threadIdx.x; i < end; i += blockDim.x)
                sum += fo::clipped_square(grads[i], clip_value);
        } else {
            const T l2 = T(seg_l2[s]), l1 = T(seg_l1[s]);
            for (long long i = begin + threadIdx.x; i < end; i += blockDim.x) {
                const T p = params[i];
                const T g = fo::penalized_grad(grads[i], p, l2, l1, l1_in_gradient != 0);
                grads[i] = g;
                sum += fo::clipped_square(g, clip_value);
                const double w = double(p);
                param_sq += fd::mul(w, w);
                param_abs += fd::fabs(w);
            }
        }
        sum = block_sum(sum, sums);
        const long long slot = fo::partial_slot(blockIdx.x, s);
        if (threadIdx.x == 0) partials[slot] = sum;
        if (params != nullptr) {
            param_sq = block_sum(param_sq, sums);
            param_abs = block_sum(param_abs, sums);
            if (threadIdx.x == 0) {
                partials[slots + slot] = param_sq;
                partials[2 * slots + slot] = param_abs;
            }
        }
    });
}

// out[s] = the partials of segment s added in block order, and acc[s] += out[s] unless
// acc is null (grad_sq_norms' sum over steps). With `total` (not null: a penalty's
// partials were summed), thread 0 adds the penalty's value to total[0] (fo::penalty_total).
__global__ void sq_norm_totals(const double* partials, const long long* offsets,
                               long long segments, long long chunk, long long blocks,
                               double* out, double* acc, const double* seg_l1,
                               const double* seg_l2, double* total) {
    const long long s = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (s < segments) {
        const double sum = fo::sq_norm_total(partials, offsets, s, chunk, blocks);
        out[s] = sum;
        if (acc != nullptr) acc[s] += sum;
    }
    if (s == 0 && total != nullptr)
        total[0] += fo::penalty_total(partials, offsets, segments, chunk, blocks, seg_l1, seg_l2);
}
