// Block-wide sums and reductions shared by the kernel files (dense.cu, norm.cu), device
// code only. Every reduction runs in a tree whose order is fixed by the launch shape, so
// results are bitwise the same run to run; no floating-point atomics.
#pragma once

#include "common.cuh"

// Dynamic shared memory, viewed as T by each kernel that uses it.
extern __shared__ __align__(16) unsigned char shared_bytes[];

namespace fd {

struct Plus {
    template <typename T>
    __device__ T operator()(T a, T b) const { return a + b; }
};

// combine over the ``value`` of every thread of a 1-D block, by a tree in a fixed order
// (blockDim.x a power of two, ``buffer`` blockDim.x elements); every thread gets the
// result. All threads must call it.
template <typename T, typename Combine>
__device__ T block_reduce(T* buffer, T value, Combine combine) {
    const unsigned int t = threadIdx.x;
    buffer[t] = value;
    __syncthreads();
    for (unsigned int half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half) {
            buffer[t] = combine(buffer[t], buffer[t + half]);
        }
        __syncthreads();
    }
    const T result = buffer[0];
    __syncthreads();  // the buffer is written again by the next reduction
    return result;
}

// In a (blockDim.x, blockDim.y) block whose threads (x, y) hold partial sums of column x
// (blockDim.y a power of two): values[q] becomes, in every thread, the sum over y of the
// values[q] of the threads of its column, q < COUNT, by a tree in ``parts`` (COUNT
// blockDim.x blockDim.y elements of shared memory). All threads must call it.
template <typename T, int COUNT>
__device__ void column_sums(T* parts, T (&values)[COUNT]) {
    const unsigned int size = blockDim.x * blockDim.y;
    const unsigned int t = threadIdx.y * blockDim.x + threadIdx.x;
    for (int q = 0; q < COUNT; ++q) {
        parts[q * size + t] = values[q];
    }
    __syncthreads();
    for (unsigned int half = blockDim.y / 2; half > 0; half /= 2) {
        if (threadIdx.y < half) {
            for (int q = 0; q < COUNT; ++q) {
                parts[q * size + t] += parts[q * size + t + half * blockDim.x];
            }
        }
        __syncthreads();
    }
    for (int q = 0; q < COUNT; ++q) {
        values[q] = parts[q * size + threadIdx.x];
    }
    __syncthreads();  // parts is written again by the next call
}

}  // namespace fd
