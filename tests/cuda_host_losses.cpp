// Host entry points for the scalar math of kernels/cuda/loss_math.cuh, compiled by
// tests/cuda_host.py and compared with kernels.reference by test_cuda_host_losses.py.
//
// The row functions replay what the kernels of losses.cu do with that math: `lanes`
// threads take the columns lane, lane + lanes, ... and their partial states merge as the
// device merges them (an xor butterfly in each warp of 32, then one over the warps'
// results, empty slots padding to 32). Every lane of a butterfly must end with the same
// state: the count of those that do not is returned in `disagree`.
#include <cstring>
#include <vector>

#include "loss_math.cuh"

namespace {

using namespace fd::loss;

template <typename T>
struct Stats {
    T m;
    double s;
};

template <typename T>
struct Best {
    T v;
    long long k;
};

// Bit equality of the members (structs have padding that memcmp would compare).
template <typename T>
bool same_bits(const T& a, const T& b) { return std::memcmp(&a, &b, sizeof(T)) == 0; }
template <typename T>
bool same_bits(const Stats<T>& a, const Stats<T>& b) { return same_bits(a.m, b.m) && same_bits(a.s, b.s); }
template <typename T>
bool same_bits(const Best<T>& a, const Best<T>& b) { return same_bits(a.v, b.v) && a.k == b.k; }

template <typename S, typename Merge>
void butterfly(std::vector<S>& lane, long long base, Merge merge, long long& disagree) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const std::vector<S> before(lane.begin() + base, lane.begin() + base + 32);
        for (int l = 0; l < 32; ++l) {
            S merged = before[l];
            merge(merged, before[l ^ offset]);
            lane[base + l] = merged;
        }
    }
    for (int l = 1; l < 32; ++l) disagree += !same_bits(lane[base + l], lane[base]);
}

// The state every lane of a group of `lanes` (32, or a multiple of 32 up to 1024) ends with.
template <typename S, typename Merge>
S group_reduce(std::vector<S> lane, Merge merge, S empty, long long& disagree) {
    for (long long base = 0; base < (long long)lane.size(); base += 32) butterfly(lane, base, merge, disagree);
    if (lane.size() == 32) return lane[0];
    std::vector<S> posted(32, empty);
    for (size_t w = 0; w < lane.size() / 32; ++w) posted[w] = lane[w * 32];
    butterfly(posted, 0, merge, disagree);
    return posted[0];
}

template <typename T>
Stats<T> row_stats(const T* x, long long k, long long lanes, long long& disagree) {
    std::vector<Stats<T>> lane(lanes, Stats<T>{T(0), 0.0});
    for (long long l = 0; l < lanes; ++l)
        for (long long j = l; j < k; j += lanes) softmax_add(x[j], lane[l].m, lane[l].s);
    auto merge = [](Stats<T>& a, const Stats<T>& b) { softmax_merge(a.m, a.s, b.m, b.s); };
    Stats<T> row = group_reduce(lane, merge, Stats<T>{T(0), 0.0}, disagree);
    row.s = softmax_row_sum(row.m, row.s);
    return row;
}

// sum over the group of per-lane double sums of f(j), j = lane, lane + lanes, ...
template <typename F>
double row_sum(long long k, long long lanes, F f, long long& disagree) {
    std::vector<double> lane(lanes, 0.0);
    for (long long l = 0; l < lanes; ++l)
        for (long long j = l; j < k; j += lanes) lane[l] += f(j);
    return group_reduce(lane, [](double& a, double b) { a += b; }, 0.0, disagree);
}

template <typename T, typename L>
void elementwise(const T* x, const T* t, long long n, double delta, T* loss, T* grad) {
    for (long long i = 0; i < n; ++i) L::eval(x[i], t[i], T(delta), loss[i], grad[i]);
}

// log-sum-exp of each row: m + log s.
template <typename T>
void log_sum_exp(const T* x, long long n, long long k, long long lanes, double* out, long long* disagree) {
    for (long long i = 0; i < n; ++i) {
        const Stats<T> st = row_stats(x + i * k, k, lanes, *disagree);
        out[i] = double(st.m) + fd::log(st.s);
    }
}

// cross_entropy_classes of losses.cu, row by row, with the MEAN's scale given.
template <typename T>
void cross_entropy_classes(const T* logits, const long long* targets, long long n, long long k,
                           long long ignore_index, double on_, double off_, double scale_,
                           long long lanes, T* losses, T* grad, long long* disagree) {
    const T on = T(on_), off = T(off_), scale = T(scale_);
    const double tsum = double(on) + double(k - 1) * double(off);
    for (long long row = 0; row < n; ++row) {
        const T* x = logits + row * k;
        T* g = grad + row * k;
        const long long y = targets[row];
        if (y == ignore_index || y < 0 || y >= k) {
            const bool ignored = y == ignore_index;
            losses[row] = ignored ? T(0) : quiet_nan<T>();
            for (long long j = 0; j < k; ++j) g[j] = ignored ? T(0) : quiet_nan<T>();
            continue;
        }
        const Stats<T> st = row_stats(x, k, lanes, *disagree);
        const T a = T(tsum / st.s);
        for (long long j = 0; j < k; ++j)
            g[j] = cross_entropy_grad(fd::exp(T(x[j] - st.m)), a, j == y ? on : off, scale);
        const double sum_other = row_sum(k, lanes, [&](long long j) { return j == y ? 0.0 : double(T(x[j] - st.m)); },
                                         *disagree);
        losses[row] = T(class_row_loss(fd::log(st.s), tsum, on, off, sum_other, T(x[y] - st.m)));
    }
}

// cross_entropy_dense of losses.cu, row by row.
template <typename T>
void cross_entropy_dense(const T* logits, const T* targets, long long n, long long k, double keep_,
                         double off_, double scale_, long long lanes, T* losses, T* grad,
                         long long* disagree) {
    const T keep = T(keep_), off = T(off_), scale = T(scale_);
    for (long long row = 0; row < n; ++row) {
        const T* x = logits + row * k;
        const T* t = targets + row * k;
        T* g = grad + row * k;
        const Stats<T> st = row_stats(x, k, lanes, *disagree);
        const double tsum = row_sum(k, lanes, [&](long long j) { return double(smoothed_target(keep, t[j], off)); }, *disagree);
        const T a = T(tsum / st.s);
        for (long long j = 0; j < k; ++j)
            g[j] = cross_entropy_grad(fd::exp(T(x[j] - st.m)), a, smoothed_target(keep, t[j], off), scale);
        const double sum_td = row_sum(k, lanes, [&](long long j) {
            return double(smoothed_target(keep, t[j], off)) * double(T(x[j] - st.m));
        }, *disagree);
        losses[row] = T(dense_row_loss(fd::log(st.s), tsum, sum_td));
    }
}

template <typename T>
void argmax_rows(const T* x, long long n, long long k, long long lanes, long long* out, long long* disagree) {
    for (long long i = 0; i < n; ++i) {
        std::vector<Best<T>> lane(lanes, Best<T>{T(0), -1});
        for (long long l = 0; l < lanes; ++l)
            for (long long j = l; j < k; j += lanes) argmax_merge(lane[l].v, lane[l].k, x[i * k + j], j);
        auto merge = [](Best<T>& a, const Best<T>& b) { argmax_merge(a.v, a.k, b.v, b.k); };
        out[i] = group_reduce(lane, merge, Best<T>{T(0), -1}, *disagree).k;
    }
}

}  // namespace

#define FD_ENTRY_POINTS(T, suffix)                                                                     \
    extern "C" void bce_##suffix(const T* x, const T* t, long long n, double d, T* l, T* g) {         \
        elementwise<T, Bce>(x, t, n, d, l, g);                                                         \
    }                                                                                                  \
    extern "C" void mse_##suffix(const T* x, const T* t, long long n, double d, T* l, T* g) {         \
        elementwise<T, Mse>(x, t, n, d, l, g);                                                         \
    }                                                                                                  \
    extern "C" void huber_##suffix(const T* x, const T* t, long long n, double d, T* l, T* g) {       \
        elementwise<T, Huber>(x, t, n, d, l, g);                                                       \
    }                                                                                                  \
    extern "C" void log_sum_exp_##suffix(const T* x, long long n, long long k, long long lanes,       \
                                         double* out, long long* disagree) {                          \
        log_sum_exp(x, n, k, lanes, out, disagree);                                                    \
    }                                                                                                  \
    extern "C" void cross_entropy_classes_##suffix(const T* x, const long long* y, long long n,       \
                                                   long long k, long long ignore, double on,           \
                                                   double off, double scale, long long lanes,          \
                                                   T* losses, T* grad, long long* disagree) {          \
        cross_entropy_classes(x, y, n, k, ignore, on, off, scale, lanes, losses, grad, disagree);     \
    }                                                                                                  \
    extern "C" void cross_entropy_dense_##suffix(const T* x, const T* t, long long n, long long k,    \
                                                 double keep, double off, double scale,               \
                                                 long long lanes, T* losses, T* grad,                  \
                                                 long long* disagree) {                                \
        cross_entropy_dense(x, t, n, k, keep, off, scale, lanes, losses, grad, disagree);             \
    }                                                                                                  \
    extern "C" void argmax_rows_##suffix(const T* x, long long n, long long k, long long lanes,      \
                                         long long* out, long long* disagree) {                       \
        argmax_rows(x, n, k, lanes, out, disagree);                                                    \
    }

FD_ENTRY_POINTS(float, f32)
FD_ENTRY_POINTS(double, f64)
