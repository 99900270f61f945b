// Qwen2-MoE's shared-expert gate: the shared expert's output y scaled per token by the logistic
// sigmoid of one logit (x·shared_expert_gateᵀ) and added to the routed experts' output.
#pragma once
#include <cstdint>

namespace upcycle::ops {

// y, out, d_out, d_y [N,H]; logit, d_logit [N]; σ the logistic sigmoid.
// forward:  out[n,:] += σ(logit[n]) · y[n,:]
// backward: d_y[n,:]   = σ(logit[n]) · d_out[n,:]                       (written)
//           d_logit[n] = σ(logit[n])·(1 − σ(logit[n])) · Σ_h d_out[n,h]·y[n,h]   (written)
// T holds the rows, S the logits (the GPU's bf16 rows have fp32 logits).
template <class T, class S>
void sigmoid_gate_forward(T* out, const T* y, const S* logit, int64_t N, int64_t H);
template <class T, class S>
void sigmoid_gate_backward(T* d_y, S* d_logit, const T* d_out, const T* y, const S* logit, int64_t N, int64_t H);

}  // namespace upcycle::ops
