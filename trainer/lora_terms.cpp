#include "trainer/lora_terms.hpp"

#include <fmt/format.h>

#include "core/random.hpp"

namespace upcycle {

std::vector<LoraPlace> lora_places(const LoraAdapter& adapter) {
  std::vector<LoraPlace> out;
  for (const LoraModule& m : adapter.modules) out.push_back({m.layer, m.module, m.expert, m.a.shape(), m.b.shape()});
  return out;
}

std::string lora_factor_name(const LoraConfig& config, const LoraPlace& place, bool is_b) {
  return config.is_moe() ? lora_moe_tensor_name(place.layer, place.module, place.expert, is_b)
                         : lora_tensor_name(place.layer, place.module, is_b);
}

uint64_t lora_dropout_seed(uint64_t micro_batch, size_t term) {
  return micro_batch ? Rng::stream(micro_batch, std::to_string(term)).next() | 1 : 0;
}

std::string lora_adapter_summary(const LoraAdapter& a) {
  return fmt::format("LoRA adapter of rank {}, scale {:.4g}, on {} matrices{}", a.config.rank, a.config.scaling(),
                     a.modules.size(),
                     a.config.is_moe() ? fmt::format(" ({} experts, top-{})", a.config.experts, a.config.top_k) : "");
}

}  // namespace upcycle
