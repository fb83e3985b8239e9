// Weight constraints applied after an update: kernels/spec.py's max_norm, with the
// per-column math in constraints.cuh.
//
// max_norm_columns<T>: grid ceil(cols / COLUMNS) x block COLUMNS * ROW_LANES (256), no
// dynamic shared memory. Thread (row lane r, column j) sums W[i, j]^2 in double over the
// rows i = r, r + ROW_LANES, ... in order; the ROW_LANES partials of a column are added by
// a fixed pairwise tree in shared memory (the same bits on every run: no atomics), and
// each thread then rescales its rows of the column. A skipped step (status) returns at
// once, the same for the whole grid.
#include "constraints.cuh"

namespace fc = fd::constraints;

template <typename T>
__global__ void max_norm_columns(T* W, long long rows, long long cols, double max_norm_value,
                                 double eps, const double* skip) {
    __shared__ double sums[fc::ROW_LANES][fc::COLUMNS];
    if (skip != nullptr && *skip != 0.0) return;
    const int column = threadIdx.x % fc::COLUMNS, lane = threadIdx.x / fc::COLUMNS;
    const long long j = blockIdx.x * (long long)fc::COLUMNS + column;
    sums[lane][column] = j < cols ? fc::column_sq_partial(W, rows, cols, j, lane, fc::ROW_LANES)
                                  : 0.0;
    __syncthreads();
    for (int half = fc::ROW_LANES / 2; half > 0; half /= 2) {
        if (lane < half) sums[lane][column] += sums[lane + half][column];
        __syncthreads();
    }
    if (j < cols) {
        const double factor = fc::max_norm_factor(sums[0][column], max_norm_value, eps);
        for (long long i = lane; i < rows; i += fc::ROW_LANES)
            W[i * cols + j] = fc::rescaled(W[i * cols + j], factor);
    }
}
