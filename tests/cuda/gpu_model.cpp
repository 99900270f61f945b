#include "gpu_model.hpp"

#include <nlohmann/json.hpp>

#include "cuda_check.hpp"
#include "trainer/ops/cross_entropy.hpp"

namespace upcycle::test {

ModelConfig gpu_config(const std::string& type) {
  nlohmann::ordered_json j = {
      {"model_type", type},          {"vocab_size", 50},          {"hidden_size", 64},
      {"intermediate_size", 96},     {"num_hidden_layers", 2},    {"num_attention_heads", 2},
      {"num_key_value_heads", 1},    {"max_position_embeddings", 128}, {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},       {"tie_word_embeddings", false},
  };
  if (type == "mixtral") j["num_local_experts"] = 4, j["num_experts_per_tok"] = 2, j["router_aux_loss_coef"] = 0.02;
  if (type == "mistral") j["sliding_window"] = 16;
  if (type == "qwen2_moe") {  // biases, a shared expert behind its gate, top-k not renormalised
    j["num_experts"] = 4, j["num_experts_per_tok"] = 2, j["router_aux_loss_coef"] = 0.02;
    j["moe_intermediate_size"] = 48, j["shared_expert_intermediate_size"] = 80, j["norm_topk_prob"] = false;
  }
  return ModelConfig::from_json(j, "<gpu_config>");
}

GpuBatch gpu_batch(int64_t vocab, uint64_t seed) {
  const std::vector<int32_t> ids = uniform_ints(57, seed, 0, int32_t(vocab));
  GpuBatch d{pack({{ids.begin(), ids.begin() + 37}, {ids.begin() + 37, ids.end()}}), {}};
  for (size_t n = 0; n < ids.size(); ++n) d.targets.push_back(n % 7 == 3 ? ops::kIgnoreIndex : ids[(n + 1) % ids.size()]);
  return d;
}

}  // namespace upcycle::test
