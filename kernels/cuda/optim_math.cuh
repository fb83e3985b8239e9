// The optimizer math of kernels/spec.py (sgd .. nadam, grad_sq_norms) for one element, and
// the walk of a flat buffer cut into segments by `offsets` (S + 1 int64 entries), written
// once for the kernels of optim.cu and for the host C++ tests (tests/cuda_host_optim.cpp),
// which run these very functions against kernels.reference.
//
// Arithmetic is in T with every constant rounded to T first (optim.py passes them as T),
// in the order kernels/reference/optim.py evaluates, so that the results agree with it.
#pragma once

#include "common.cuh"

namespace fd {
namespace optim {

// ------------------------------------------------------------- effective gradient
// np.clip(g, -c, c): NaN fails both comparisons and passes through.
template <typename T>
FD_HD T clip(T g, T c) {
    return g > c ? c : (g < -c ? -c : g);
}

// What an element takes from its segment: the clip value (the same for all), seg_scale[s]
// and seg_decay[s] rounded to T, and the L1 rule after the step (kernels.spec's l1_rule,
// the same for all) with its threshold l1 = lr * seg_l1[s] (in double, rounded to T).
template <typename T>
struct Segment {
    T clip_value, scale, decay;
    int l1_rule;
    T l1;
};

// kernels.spec: g = clip(grads[i], -clip_value, clip_value) * seg_scale[s] + seg_decay[s] * p.
template <typename T>
FD_HD T effective_grad(T grad, T p, const Segment<T>& seg) {
    return mul(clip(grad, seg.clip_value), seg.scale) + mul(seg.decay, p);
}

// Decay before the step: decoupled (SGDW, AdamW) p *= 1 - lr wd and g = clip(g) scale;
// coupled g = effective_grad (g += wd p). Returns g; `param` is the value the step starts from.
template <typename T>
FD_HD T decay_step(bool decoupled, T lr, T grad, T& param, const Segment<T>& seg) {
    if (decoupled) {
        param = mul(param, T(1) - mul(lr, seg.decay));
        return mul(clip(grad, seg.clip_value), seg.scale);
    }
    return effective_grad(grad, param, seg);
}

// kernels.spec's l1_rule codes.
constexpr int L1_CLIPPED = 1, L1_PROXIMAL = 2;

// np.sign: +-1, 0 for +-0, NaN for NaN.
template <typename T>
FD_HD T sign(T x) {
    return x > T(0) ? T(1) : (x < T(0) ? T(-1) : (x == T(0) ? T(0) : x));
}

// kernels.spec's L1 rule after the optimizer's step, with t = seg.l1 (lr * seg_l1[s]):
// `old` the parameter before the update, `p` the stepped one. L1_CLIPPED (1):
// p -= min(t, |old|) sign(old); L1_PROXIMAL (2): p = sign(p) max(|p| - t, 0) (NaN kept, as
// np.maximum); anything else (L1_GRADIENT): p as it is.
template <typename T>
FD_HD T l1_after_step(const Segment<T>& seg, T old, T p) {
    if (seg.l1_rule == L1_CLIPPED) {
        const T size = fd::fabs(old);
        return p - mul(size < seg.l1 ? size : seg.l1, sign(old));
    }
    if (seg.l1_rule == L1_PROXIMAL) {
        const T excess = fd::fabs(p) - seg.l1;
        return mul(sign(p), excess > T(0) || excess != excess ? excess : T(0));
    }
    return p;
}

// ------------------------------------------------------------------- the optimizers
// One struct per optimizer: its constants (in the order of the kernel's parameters, see
// optim.cu) and the update of one element, called as op(p, grad, s1, s2, s3, segment) on
// the element's parameter, gradient and state slots 1..3 (a slot the optimizer leaves
// unused is a dummy never read). Each comment gives the reference's formula.

// torch SGD, or SGDW (decoupled decay, decay_step). buf = g (first step) or
// momentum buf + (1 - dampening) g; g = g + momentum buf (nesterov) or buf; p -= lr g.
template <typename T>
struct Sgd {
    T lr, momentum, one_minus_dampening;
    bool use_momentum, nesterov, first_step, decoupled;

    FD_HD void operator()(T& p, T grad, T& buf, T&, T&, const Segment<T>& seg) const {
        T param = p;
        T g = decay_step(decoupled, lr, grad, param, seg);
        if (use_momentum) {
            buf = first_step ? g : mul(momentum, buf) + mul(one_minus_dampening, g);
            g = nesterov ? g + mul(momentum, buf) : buf;
        }
        p = param - mul(lr, g);
    }
};

// torch Adagrad. sum += g^2; p -= lr g / (sqrt(sum) + eps).
template <typename T>
struct Adagrad {
    T lr, eps;

    FD_HD void operator()(T& p, T grad, T& sum, T&, T&, const Segment<T>& seg) const {
        const T g = effective_grad(grad, p, seg);
        sum = sum + mul(g, g);
        p = p - mul(lr, g) / (fd::sqrt(sum) + eps);
    }
};

// torch RMSprop. v = alpha v + (1 - alpha) g^2; centered: ga = alpha ga + (1 - alpha) g,
// avg = sqrt(v - ga^2) + eps, else avg = sqrt(v) + eps; momentum: buf = momentum buf + g / avg,
// p -= lr buf, else p -= lr g / avg.
template <typename T>
struct Rmsprop {
    T lr, alpha, one_minus_alpha, eps, momentum;
    bool centered, use_momentum;

    FD_HD void operator()(T& p, T grad, T& square_avg, T& grad_avg, T& buf,
                          const Segment<T>& seg) const {
        const T g = effective_grad(grad, p, seg);
        square_avg = mul(alpha, square_avg) + mul(mul(one_minus_alpha, g), g);
        T avg;
        if (centered) {
            grad_avg = mul(alpha, grad_avg) + mul(one_minus_alpha, g);
            avg = fd::sqrt(square_avg - mul(grad_avg, grad_avg)) + eps;
        } else {
            avg = fd::sqrt(square_avg) + eps;
        }
        if (use_momentum) {
            buf = mul(momentum, buf) + g / avg;
            p = p - mul(lr, buf);
        } else {
            p = p - mul(lr, g) / avg;
        }
    }
};

// torch Adadelta. v = rho v + (1 - rho) g^2; d = sqrt(u + eps) / sqrt(v + eps) g;
// u = rho u + (1 - rho) d^2; p -= lr d.
template <typename T>
struct Adadelta {
    T lr, rho, one_minus_rho, eps;

    FD_HD void operator()(T& p, T grad, T& square_avg, T& acc_delta, T&,
                          const Segment<T>& seg) const {
        const T g = effective_grad(grad, p, seg);
        square_avg = mul(rho, square_avg) + mul(mul(one_minus_rho, g), g);
        const T delta = mul(fd::sqrt(acc_delta + eps) / fd::sqrt(square_avg + eps), g);
        acc_delta = mul(rho, acc_delta) + mul(mul(one_minus_rho, delta), delta);
        p = p - mul(lr, delta);
    }
};

// m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2 (Adam and NAdam).
template <typename T>
FD_HD void moments(T g, T& m, T& v, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2) {
    m = mul(beta1, m) + mul(one_minus_beta1, g);
    v = mul(beta2, v) + mul(mul(one_minus_beta2, g), g);
}

// torch Adam / AdamW. Decoupled: p *= 1 - lr wd first, else g += wd p; moments; amsgrad:
// vmax = max(vmax, v) (NaN wins, as np.maximum) and v_hat = vmax, else v_hat = v;
// p -= step_size m / (sqrt(v_hat) / sqrt_bc2 + eps) with step_size = lr / (1 - beta1^t)
// and sqrt_bc2 = sqrt(1 - beta2^t), both computed by the caller in double.
template <typename T>
struct Adam {
    T lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, step_size, sqrt_bc2;
    bool decoupled, amsgrad;

    FD_HD void operator()(T& p, T grad, T& m, T& v, T& v_max, const Segment<T>& seg) const {
        T param = p;
        const T g = decay_step(decoupled, lr, grad, param, seg);
        moments(g, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2);
        T v_hat = v;
        if (amsgrad) {
            if (v > v_max || v != v) v_max = v;
            v_hat = v_max;
        }
        p = param - mul(step_size, m) / (fd::sqrt(v_hat) / sqrt_bc2 + eps);
    }
};

// torch NAdam with the caller's momentum schedule. Moments; denom = sqrt(v / bc2) + eps
// with bc2 = 1 - beta2^t; p -= grad_coef g / denom; p -= avg_coef m / denom, where
// grad_coef = lr (1 - mu) / (1 - mu_product) and avg_coef = lr mu_next / (1 - mu_product mu_next).
template <typename T>
struct Nadam {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, eps, bc2, grad_coef, avg_coef;

    FD_HD void operator()(T& p, T grad, T& m, T& v, T&, const Segment<T>& seg) const {
        const T g = effective_grad(grad, p, seg);
        moments(g, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2);
        const T denom = fd::sqrt(v / bc2) + eps;
        const T param = p - mul(grad_coef, g) / denom;
        p = param - mul(avg_coef, m) / denom;
    }
};

// kernels.spec: an update changes nothing when status[GUARD_SKIP] != 0 (NaN included);
// `skip` points at that entry, or is null when the caller passed no status.
FD_HD bool skip_update(const double* skip) {
    return skip != nullptr && *skip != 0.0;
}

// ------------------------------------------------------------------ segment walks
// The segment of element i is the last s with offsets[s] <= i (numpy.searchsorted(offsets,
// i, 'right') - 1), which passes over empty segments. Both functions keep s within
// [0, segments - 1] and stop at the last segment, whatever offsets holds, so that bad
// offsets can give wrong sums but never an access out of bounds or an endless loop.

// Moves s forward to the segment of i (i at or after segment s's start).
FD_HD long long advance(const long long* offsets, long long segments, long long s, long long i) {
    while (s + 1 < segments && offsets[s + 1] <= i) ++s;
    return s;
}

// The segment of element i, by binary search (segments >= 1).
FD_HD long long segment_of(const long long* offsets, long long segments, long long i) {
    long long lo = 0, hi = segments - 1;
    while (lo < hi) {
        const long long mid = lo + (hi - lo + 1) / 2;
        if (offsets[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return advance(offsets, segments, lo, i);
}

// Calls piece(s, begin, end) for the consecutive non-empty pieces [begin, end) of the
// segments s that [start, stop) overlaps, in order.
template <typename Piece>
FD_HD void for_each_piece(const long long* offsets, long long segments, long long start,
                          long long stop, const Piece& piece) {
    if (start >= stop) return;
    long long s = segment_of(offsets, segments, start);
    while (start < stop) {
        const long long end = s + 1 < segments && offsets[s + 1] < stop ? offsets[s + 1] : stop;
        piece(s, start, end);
        start = end;
        s = advance(offsets, segments, s, start);
    }
}

// Segment s's values; seg_l1 is null when no L1 rule acts after the step.
template <typename T>
FD_HD Segment<T> segment(const double* seg_scale, const double* seg_decay, const double* seg_l1,
                         double l1_lr, int l1_rule, long long s, T clip_value) {
    return Segment<T>{clip_value, T(seg_scale[s]), T(seg_decay[s]),
                      seg_l1 == nullptr ? 0 : l1_rule, seg_l1 == nullptr ? T(0) : T(l1_lr * seg_l1[s])};
}

// ------------------------------------------------------------- flat-buffer update
// The buffers and per-segment arrays of one update; states 1..3 are null where unused.
template <typename T>
struct Flat {
    T* params;
    const T* grads;
    T* state1;
    T* state2;
    T* state3;
    const long long* offsets;
    long long segments;
    const double* seg_scale;
    const double* seg_decay;
    long long n;
    T clip_value;
    const double* seg_l1;
    double l1_lr;
    int l1_rule;

    FD_HD Segment<T> segment_of(long long s) const {
        return segment(seg_scale, seg_decay, seg_l1, l1_lr, l1_rule, s, clip_value);
    }
};

// Groups [base + j W, base + j W + W) for j in [0, count), j = thread, thread + threads, ...
// A group within one segment (nearly all) makes one search; one that straddles a boundary
// walks its pieces, each element updated in the piece that holds it.
template <int W, typename T, typename Op>
FD_HD void update_groups(const Flat<T>& b, long long base, long long count, long long thread,
                         long long threads, const Op& op) {
    for (long long j = thread; j < count; j += threads) {
        const long long first = base + j * W;
        Pack<T, W> p = load<W>(b.params + first), s1{}, s2{}, s3{};
        const Pack<T, W> g = load<W>(b.grads + first);
        if (b.state1) s1 = load<W>(b.state1 + first);
        if (b.state2) s2 = load<W>(b.state2 + first);
        if (b.state3) s3 = load<W>(b.state3 + first);
        for_each_piece(b.offsets, b.segments, first, first + W,
                       [&](long long s, long long begin, long long end) {
            const Segment<T> seg = b.segment_of(s);
            for (int k = 0; k < W; ++k) {
                if (first + k >= begin && first + k < end) {
                    const T old = p.v[k];
                    op(p.v[k], g.v[k], s1.v[k], s2.v[k], s3.v[k], seg);
                    p.v[k] = l1_after_step(seg, old, p.v[k]);
                }
            }
        });
        store<W>(b.params + first, p);
        if (b.state1) store<W>(b.state1 + first, s1);
        if (b.state2) store<W>(b.state2 + first, s2);
        if (b.state3) store<W>(b.state3 + first, s3);
    }
}

// The parameters every update kernel of optim.cu starts with (and the host tests' entry
// points), in the order optim.py's _update_args passes them: state1..3 are null where the
// optimizer leaves a slot unused; skip is null or points at status[GUARD_SKIP]; aligned:
// every buffer used starts on 16 bytes; seg_l1 is null where no L1 rule acts after the
// step, else that rule is l1_rule with thresholds l1_lr * seg_l1[s] (l1_lr: the op's lr).
#define OPTIM_FLAT_PARAMS(T)                                                                \
    T *params, const T *grads, T *state1, T *state2, T *state3, const long long *offsets,  \
        long long segments, const double *seg_scale, const double *seg_decay, long long n, \
        int aligned, const double *skip, T clip_value, const double *seg_l1, double l1_lr, \
        int l1_rule
#define OPTIM_FLAT_ARGS                                                                     \
    params, grads, state1, state2, state3, offsets, segments, seg_scale, seg_decay, n,     \
        aligned, skip, clip_value, seg_l1, l1_lr, l1_rule
// What every update kernel takes after OPTIM_FLAT_PARAMS (then its constants and flags):
// kernels.spec's diag as optim.cu computes it, `partials` (null without diagnostics) and the
// `chunk` of elements per block (see update_chunk below).
#define OPTIM_TALLY_PARAMS double *partials, long long chunk

// The whole update, as thread `thread` of `threads` (a grid-stride loop). Aligned buffers
// load groups of 16 bytes as one access (float4, double2), the last n mod W elements one
// by one. (With kernels.spec's diag, update_chunk below runs instead.)
template <typename T, typename Op>
FD_HD void update(OPTIM_FLAT_PARAMS(T), long long thread, long long threads, const Op& op) {
    if (skip_update(skip)) return;
    const Flat<T> b{params, grads, state1, state2, state3, offsets, segments, seg_scale,
                    seg_decay, n, clip_value, seg_l1, l1_lr, l1_rule};
    if (aligned) {
        constexpr int W = 16 / sizeof(T);
        const long long groups = n / W;
        update_groups<W>(b, 0, groups, thread, threads, op);
        update_groups<1>(b, groups * W, n - groups * W, thread, threads, op);
    } else {
        update_groups<1>(b, 0, n, thread, threads, op);
    }
}

// ------------------------------------------------------------------ update diagnostics
// kernels.spec's diag: per segment, sum (p' - p)^2 and sum p^2 over the update, in double
// from the values in T (p before the update, p' after). The update then runs in the
// chunks of the gradient norms' layout below instead of a grid-stride loop: block b takes
// [b chunk, min(n, (b + 1) chunk)) piece by piece, thread t of the block the elements
// begin + t, begin + t + threads, ... of each piece (one at a time), and the block's sums
// of each piece go to the slot partial_slot(b, s) of two halves of `partials` (sum of
// (p' - p)^2, then sum of p^2; tally_slots(n, chunk, segments) entries each), which
// add_tally_total adds to diag in block order, as sq_norm_total adds the norms' partials.
struct Tally {
    double change_sq, param_sq;
};

// Updates the elements begin + thread, begin + thread + threads, ... < end of segment s,
// returning their sums.
template <typename T, typename Op>
FD_HD Tally update_strided(const Flat<T>& b, long long s, long long begin, long long end,
                           long long thread, long long threads, const Op& op) {
    const Segment<T> seg = b.segment_of(s);
    Tally tally{0.0, 0.0};
    for (long long i = begin + thread; i < end; i += threads) {
        T p = b.params[i], s1{}, s2{}, s3{};
        if (b.state1) s1 = b.state1[i];
        if (b.state2) s2 = b.state2[i];
        if (b.state3) s3 = b.state3[i];
        const double before = double(p);
        const T old = p;
        op(p, b.grads[i], s1, s2, s3, seg);
        p = l1_after_step(seg, old, p);
        b.params[i] = p;
        if (b.state1) b.state1[i] = s1;
        if (b.state2) b.state2[i] = s2;
        if (b.state3) b.state3[i] = s3;
        const double change = double(p) - before;
        tally.change_sq += mul(change, change);
        tally.param_sq += mul(before, before);
    }
    return tally;
}

// Block `block` of the update with diagnostics, as thread `thread` of the block's
// `threads`: post(s, tally) receives this thread's sums of each piece, in order (the
// piece walk is the same for every thread of the block, so a post that synchronises the
// block is reached by all).
template <typename T, typename Op, typename Post>
FD_HD void update_chunk(const Flat<T>& b, long long chunk, long long block, long long thread,
                        long long threads, const Op& op, const Post& post) {
    const long long start = block * chunk;
    const long long stop = start + chunk < b.n ? start + chunk : b.n;
    for_each_piece(b.offsets, b.segments, start, stop,
                   [&](long long s, long long begin, long long end) {
        post(s, update_strided(b, s, begin, end, thread, threads, op));
    });
}

// ------------------------------------------------------------------- gradient norms
// grad_sq_norms sums clip(g)^2 in double over fixed chunks of `chunk` elements, one per
// block b, storing the partial sum of b's piece of segment s at partial_slot(b, s). The
// pieces of one block have increasing segments and the next block starts in or after the
// last of them, so these slots strictly increase in (b, s) order and never collide: the
// partials need blocks + segments entries and no clearing, since every slot read is
// written in the same call.
template <typename T>
FD_HD double clipped_square(T g, T clip_value) {
    const double x = double(clip(g, clip_value));
    return x * x;
}

FD_HD long long partial_slot(long long block, long long s) {
    return block + s;
}

// grad_sq_norms with a penalty (kernels.spec): the gradient g + l2 p (+ l1 sign(p) when
// l1_in_gradient) that replaces grads[i], l2 and l1 the segment's values rounded to T.
template <typename T>
FD_HD T penalized_grad(T g, T p, T l2, T l1, bool l1_in_gradient) {
    const T with_l2 = g + mul(l2, p);
    return l1_in_gradient ? with_l2 + mul(l1, sign(p)) : with_l2;
}

// The penalty's value from its partials: with a penalty, grad_sq_norms' partials hold three
// halves of blocks + segments slots each (the norms', then sum p^2, then sum |p|, each
// sum in double), and the penalty is sum over segments, then blocks in order, of
// l2 / 2 sum p^2 + l1 sum |p| over each piece.
FD_HD double penalty_total(const double* partials, const long long* offsets, long long segments,
                           long long chunk, long long blocks, const double* seg_l1,
                           const double* seg_l2) {
    const long long slots = blocks + segments;
    double total = 0.0;
    for (long long s = 0; s < segments; ++s) {
        const long long begin = offsets[s], end = offsets[s + 1];
        if (end <= begin) continue;
        const long long first = begin / chunk > 0 ? begin / chunk : 0;
        const long long last = (end - 1) / chunk < blocks - 1 ? (end - 1) / chunk : blocks - 1;
        for (long long block = first; block <= last; ++block) {
            const long long slot = partial_slot(block, s);
            total += seg_l2[s] / 2 * partials[slots + slot] + seg_l1[s] * partials[2 * slots + slot];
        }
    }
    return total;
}

// The slots of one half of the update diagnostics' partials: blocks + segments, the
// blocks of chunk elements that cover n.
FD_HD long long tally_slots(long long n, long long chunk, long long segments) {
    return (n + chunk - 1) / chunk + segments;
}

// out[s]: the partials of segment s, in block order (0 for an empty segment). The blocks
// read are clamped to [0, blocks), which valid offsets never leave.
FD_HD double sq_norm_total(const double* partials, const long long* offsets, long long s,
                           long long chunk, long long blocks) {
    const long long begin = offsets[s], end = offsets[s + 1];
    double total = 0.0;
    if (end > begin) {
        const long long first = begin / chunk > 0 ? begin / chunk : 0;
        const long long last = (end - 1) / chunk < blocks - 1 ? (end - 1) / chunk : blocks - 1;
        for (long long block = first; block <= last; ++block)
            total += partials[partial_slot(block, s)];
    }
    return total;
}

// kernels.spec's diag (segments x 2, row-major): adds the partials of segment s, each half
// in block order, of an update with diagnostics over n elements.
FD_HD void add_tally_total(const double* partials, const long long* offsets, long long segments,
                           long long s, long long n, long long chunk, double* diag) {
    const long long slots = tally_slots(n, chunk, segments), blocks = slots - segments;
    diag[2 * s] += sq_norm_total(partials, offsets, s, chunk, blocks);
    diag[2 * s + 1] += sq_norm_total(partials + slots, offsets, s, chunk, blocks);
}

}  // namespace optim
}  // namespace fd
