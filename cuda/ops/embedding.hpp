// Token embedding lookup on the GPU (trainer/ops/embedding.hpp).
#pragma once
#include <cstdint>

#include "cuda/runtime.hpp"

namespace upcycle::cuda {

// forward:  out[N,H] = table[ids[n], :]             table [V,H], ids [N] in [0, V)
// backward: d_table[ids[n], :] += d_out[n, :]       fp32 d_table; a repeated id sums its rows in
//           token order (no atomics: the same input gives the same bits every run)
template <class T>
void embedding_forward(T* out, const T* table, const int32_t* ids, int64_t N, int64_t H, int64_t V,
                       cudaStream_t stream = nullptr);
template <class T>
void embedding_backward(float* d_table, const T* d_out, const int32_t* ids, int64_t N, int64_t H, int64_t V,
                        cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
