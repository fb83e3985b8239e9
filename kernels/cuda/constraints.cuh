// The math of kernels/spec.py's max_norm (Keras MaxNorm on the columns of a weight matrix)
// for one column, written once for the kernel of constraints.cu and for the host C++ tests
// (tests/cuda_host_optim.cpp), which run these functions against kernels.reference.
#pragma once

#include "common.cuh"

namespace fd {
namespace constraints {

// A block of max_norm_columns: COLUMNS adjacent columns (a warp's loads of a row are
// adjacent) times ROW_LANES lanes of rows; constraints.py launches COLUMNS * ROW_LANES
// threads per block.
constexpr int COLUMNS = 32, ROW_LANES = 8;

// The sum of W[i, j]^2 in double over the rows i = lane, lane + lanes, ... of column j of
// the row-major (rows, cols) matrix W, in that order.
template <typename T>
FD_HD double column_sq_partial(const T* W, long long rows, long long cols, long long j,
                               long long lane, long long lanes) {
    double sum = 0.0;
    for (long long i = lane; i < rows; i += lanes) {
        const double w = double(W[i * cols + j]);
        sum += mul(w, w);
    }
    return sum;
}

// Keras MaxNorm's factor of a column of squared norm `sq`: min(n, c) / (eps + n), n = sqrt(sq)
// (a NaN norm gives NaN).
FD_HD double max_norm_factor(double sq, double max_norm_value, double eps) {
    const double norm = fd::sqrt(sq);
    return (norm > max_norm_value ? max_norm_value : norm) / (eps + norm);
}

// w times the factor in double, rounded once to T.
template <typename T>
FD_HD T rescaled(T w, double factor) {
    return T(mul(double(w), factor));
}

}  // namespace constraints
}  // namespace fd
