// The MoE router on the GPU (trainer/ops/router.hpp and router_losses.hpp): softmax, top-k and
// (optionally) renormalisation in one kernel, and the auxiliary losses. Logits, probabilities, weights and
// their gradients are fp32 (the router's logits come out of the GEMM in fp32).
#pragma once
#include <cstdint>

#include "cuda/runtime.hpp"

namespace upcycle::cuda {

// As ops::router_forward (ties: lower index first; w renormalised over the k kept or the plain
// probabilities) and ops::router_backward (adds into d_logits: renormalised, the selected logits
// only; otherwise every logit of the row, through the softmax over all E, from probs).
void router_forward(int32_t* idx, float* w, float* probs, const float* logits, const float* bias, int64_t N, int64_t E,
                    int64_t k, bool renormalise, cudaStream_t stream = nullptr);
void router_backward(float* d_logits, const float* d_w, const float* w, const float* probs, const int32_t* idx,
                     int64_t N, int64_t E, int64_t k, bool renormalise, cudaStream_t stream = nullptr);

// As the ops:: losses of the same names; the forwards wait for and return their value (summed
// in double in a fixed order), the backwards add into d_logits. Expert indices outside [0, E)
// and BCE targets outside [-1, E) are counted on the device: a forward then throws
// std::invalid_argument as the CPU op does; a backward, which does not wait, skips them
// (they are the caller's to check; the model checks them on the host).
double load_balancing_loss_forward(const float* probs, const int32_t* idx, int64_t N, int64_t E, int64_t k,
                                   double coef, const int64_t* counts = nullptr, int64_t counted_tokens = 0,
                                   cudaStream_t stream = nullptr);
void load_balancing_loss_backward(float* d_logits, const float* probs, const int32_t* idx, int64_t N, int64_t E,
                                  int64_t k, double coef, double d_loss, const int64_t* counts = nullptr,
                                  int64_t counted_tokens = 0, cudaStream_t stream = nullptr);
double router_z_loss_forward(const float* logits, int64_t N, int64_t E, double coef, cudaStream_t stream = nullptr);
void router_z_loss_backward(float* d_logits, const float* logits, int64_t N, int64_t E, double coef, double d_loss,
                            cudaStream_t stream = nullptr);
double router_bce_loss_forward(const float* logits, const int32_t* targets, int64_t N, int64_t E, double coef,
                               cudaStream_t stream = nullptr);
void router_bce_loss_backward(float* d_logits, const float* logits, const int32_t* targets, int64_t N, int64_t E,
                              double coef, double d_loss, cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
