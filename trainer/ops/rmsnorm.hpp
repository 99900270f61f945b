// RMSNorm as Hugging Face's LlamaRMSNorm: the row scaled by the reciprocal of its root mean
// square, then by a learned weight. The mean of squares is accumulated in double.
#pragma once
#include <cstdint>

namespace upcycle::ops {

// forward:  rstd[n]   = 1 / sqrt(mean_c in[n,c]² + eps)
//           out[N,C]  = weight[C] ⊙ (in[N,C] · rstd[n])
// backward: with x̂ = in · rstd and g = d_out ⊙ weight,
//           d_in[n,:] += rstd[n] · (g − x̂ · mean_c(g ⊙ x̂))
//           d_weight  += Σ_n d_out[n,:] ⊙ x̂[n,:]
// d_in or d_weight may be null (not wanted).
template <class T>
void rmsnorm_forward(T* out, T* rstd, const T* in, const T* weight, int64_t N, int64_t C, double eps);
template <class T>
void rmsnorm_backward(T* d_in, T* d_weight, const T* d_out, const T* in, const T* weight, const T* rstd, int64_t N,
                      int64_t C);

}  // namespace upcycle::ops
