// Qwen2-MoE's shared-expert gate on the GPU (trainer/ops/sigmoid_gate.hpp): the shared expert's
// output scaled per token by the sigmoid of one fp32 logit and added to the routed output.
#pragma once
#include <cstdint>

#include "cuda/runtime.hpp"

namespace upcycle::cuda {

// y, out, d_out, d_y [N,H] of T; logit, d_logit [N] in fp32; σ the logistic sigmoid.
// forward:  out[n,:] += σ(logit[n]) · y[n,:]
// backward: d_y[n,:]   = σ(logit[n]) · d_out[n,:]                                (written)
//           d_logit[n] = σ(logit[n])·(1 − σ(logit[n])) · Σ_h d_out[n,h]·y[n,h]   (written)
// The row sums accumulate in fp32 per thread, the threads' partial sums in a fixed tree.
template <class T>
void sigmoid_gate_forward(T* out, const T* y, const float* logit, int64_t N, int64_t H, cudaStream_t stream = nullptr);
template <class T>
void sigmoid_gate_backward(T* d_y, float* d_logit, const T* d_out, const T* y, const float* logit, int64_t N, int64_t H,
                           cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
