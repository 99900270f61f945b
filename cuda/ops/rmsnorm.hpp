// RMSNorm on the GPU (trainer/ops/rmsnorm.hpp): one block per row, mean of squares in fp32.
#pragma once
#include <cstdint>

#include "cuda/runtime.hpp"

namespace upcycle::cuda {

// forward:  rstd[n] = 1 / sqrt(mean_c in[n,c]² + eps) (fp32), out[N,C] = weight ⊙ (in · rstd)
// backward: d_in[n,:] += rstd[n] · (g − x̂ · mean_c(g ⊙ x̂)), g = d_out ⊙ weight, x̂ = in · rstd
//           d_weight[C] += Σ_n d_out[n,:] ⊙ x̂[n,:]   (fp32; summed over rows in a fixed order)
// d_in or d_weight may be null.
template <class T>
void rmsnorm_forward(T* out, float* rstd, const T* in, const T* weight, int64_t N, int64_t C, double eps,
                     cudaStream_t stream = nullptr);
template <class T>
void rmsnorm_backward(T* d_in, float* d_weight, const T* d_out, const T* in, const T* weight, const float* rstd,
                      int64_t N, int64_t C, cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
