// Training FLOPs per token, the way MFU is counted: 6 × the active matmul parameters (forward 2,
// backward 4) plus attention's score and value products. For an MoE only the k chosen experts
// and the router count. The embedding lookup is no matmul and does not count; a tied head
// counts once, as the head.
#pragma once
#include <cstdint>

#include "core/config.hpp"

namespace upcycle {

// Matmul parameters one token passes through: per layer q, k, v, o (and the router), the dense
// FFN or k experts' FFNs; then the LM head.
int64_t active_matmul_params(const ModelConfig& c);

// Per token over sequences of seq_len, causal: a query attends to (seq_len + 1) / 2 keys on
// average; QKᵀ and PV take 2·D FLOPs per key and head each in the forward, three times that in
// training: 12 · L · nH · D · (seq_len + 1) / 2.
double attention_train_flops_per_token(const ModelConfig& c, int64_t seq_len);

inline double train_flops_per_token(const ModelConfig& c, int64_t seq_len) {
  return 6.0 * double(active_matmul_params(c)) + attention_train_flops_per_token(c, seq_len);
}
// The forward alone: a third of training.
inline double forward_flops_per_token(const ModelConfig& c, int64_t seq_len) {
  return train_flops_per_token(c, seq_len) / 3.0;
}

}  // namespace upcycle
