#include "trainer/lora_init.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/option_table.hpp"
#include "core/random.hpp"

namespace upcycle {

namespace {

// A LoRA-MoE needs a dense llama, mistral (it becomes a Mixtral) or qwen3 base (a Qwen3-MoE;
// lora_moe_config) and an FFN target (what makes its experts differ).
void check_lora_moe(const LoraConfig& c, const ModelConfig& base) {
  if (base.is_moe() || (base.model_type != "llama" && base.model_type != "mistral" && base.model_type != "qwen3"))
    throw OptionError("lora_experts", option_name("lora_experts") + ": a LoRA-MoE is made over a dense llama or "
                                          "mistral model (it exports as a Mixtral) or a qwen3 one (a Qwen3-MoE); "
                                          "this is a " + base.model_type);
  if (std::none_of(c.target_modules.begin(), c.target_modules.end(), lora_module_per_expert))
    throw OptionError("lora_targets", option_name("lora_targets") + " names no FFN module (gate_proj, up_proj, "
                                          "down_proj): the experts would not differ");
}

// A [r, in] uniform in ±1/√in from its own stream of `seed`.
Tensor kaiming_a(int64_t r, int64_t in, uint64_t seed, const std::string& name) {
  Rng rng = Rng::stream(seed, "lora_A " + name);
  const double bound = 1.0 / std::sqrt(double(in));
  std::vector<float> a(size_t(r * in));
  for (float& x : a) x = float((2 * rng.uniform() - 1) * bound);
  return Tensor::from_f32({r, in}, std::move(a));
}

}  // namespace

std::vector<std::string> parse_lora_targets(const std::string& list, const std::string& key) {
  std::vector<std::string> asked;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    const auto& names = lora_module_names();
    if (std::find(names.begin(), names.end(), item) == names.end())
      throw OptionError(key, option_name(key) + ": '" + item + "' is not one of q_proj, k_proj, v_proj, o_proj, "
                                                              "gate_proj, up_proj, down_proj");
    if (std::find(asked.begin(), asked.end(), item) != asked.end())
      throw OptionError(key, option_name(key) + ": '" + item + "' is named twice");
    asked.push_back(item);
  }
  if (asked.empty()) throw OptionError(key, option_name(key) + " names no module");
  std::vector<std::string> ordered;
  for (const std::string& m : lora_module_names())
    if (std::find(asked.begin(), asked.end(), m) != asked.end()) ordered.push_back(m);
  return ordered;
}

std::string lora_targets_string(const std::vector<std::string>& targets) {
  std::string out;
  for (const std::string& t : targets) out += (out.empty() ? "" : ",") + t;
  return out;
}

LoraConfig complete_lora_config(LoraConfig c, const ModelConfig& base) {
  if (c.alpha == 0) c.alpha = double(c.rank);
  if (c.is_moe() && c.top_k == 0) c.top_k = std::min<int64_t>(2, c.experts);
  const bool chosen = !c.target_modules.empty();
  if (!chosen)
    for (const std::string& m : lora_module_names())
      if (lora_module_shape(base, m)) c.target_modules.push_back(m);
  for (const std::string& m : c.target_modules) {
    const auto shape = lora_module_shape(base, m);
    if (!shape)
      throw OptionError("lora_targets", option_name("lora_targets") + ": a " + base.model_type +
                                            " model has no " + m + (base.is_moe() ? " (its FFN is its experts)" : ""));
    if (c.rank > std::min((*shape)[0], (*shape)[1]))
      throw OptionError("lora_rank", option_name("lora_rank") + " " + std::to_string(c.rank) + " exceeds " + m +
                                         "'s smaller side (" + shape_string(*shape) + ")");
  }
  if (c.is_moe()) check_lora_moe(c, base);
  return c;
}

LoraAdapter init_lora_adapter(const ModelConfig& base, const LoraConfig& config, uint64_t seed) {
  LoraAdapter adapter{config, {}, {}};
  const int64_t r = config.rank;
  for (int64_t layer = 0; layer < base.num_hidden_layers; ++layer) {
    for (int64_t expert = -1; expert < config.experts; ++expert)
      for (const std::string& m : config.target_modules) {
        if (config.is_moe() && (expert >= 0) != lora_module_per_expert(m)) continue;  // FFN terms are the experts'
        const Shape w = *lora_module_shape(base, m);  // [out, in]; complete_lora_config checked it exists
        const std::string name =
            config.is_moe() ? lora_moe_tensor_name(layer, m, expert, false) : lora_tensor_name(layer, m, false);
        adapter.modules.push_back({layer, m, kaiming_a(r, w[1], seed, name),
                                   Tensor::from_f32({w[0], r}, std::vector<float>(size_t(w[0] * r), 0.0f)), expert});
      }
    if (!config.is_moe()) continue;
    // MixLoRA's router start: normal with standard deviation 0.02 (its router_init_range).
    Rng rng = Rng::stream(seed, lora_moe_router_name(layer));
    std::vector<float> router(size_t(config.experts * base.hidden_size));
    for (float& x : router) x = float(0.02 * rng.normal());
    adapter.routers.push_back(Tensor::from_f32({config.experts, base.hidden_size}, std::move(router)));
  }
  return adapter;
}

}  // namespace upcycle
