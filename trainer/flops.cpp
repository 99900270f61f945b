#include "trainer/flops.hpp"

namespace upcycle {

int64_t active_matmul_params(const ModelConfig& c) {
  const int64_t H = c.hidden_size;
  const int64_t attention = H * c.q_dim() + 2 * H * c.kv_dim() + c.q_dim() * H;
  const int64_t ffn = c.is_moe() ? c.num_experts_per_tok * 3 * H * c.expert_intermediate_size() +
                                       c.num_local_experts * H
                                 : 3 * H * c.intermediate_size;
  return c.num_hidden_layers * (attention + ffn) + c.vocab_size * H;
}

double attention_train_flops_per_token(const ModelConfig& c, int64_t seq_len) {
  return 12.0 * double(c.num_hidden_layers * c.num_attention_heads * c.head_dim) * double(seq_len + 1) / 2.0;
}

}  // namespace upcycle
