#include "trainer/lora_init.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/option_table.hpp"
#include "core/random.hpp"

namespace upcycle {

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
  return c;
}

LoraAdapter init_lora_adapter(const ModelConfig& base, const LoraConfig& config, uint64_t seed) {
  LoraAdapter adapter{config, {}};
  for (int64_t layer = 0; layer < base.num_hidden_layers; ++layer)
    for (const std::string& m : config.target_modules) {
      const Shape w = *lora_module_shape(base, m);  // [out, in]; complete_lora_config checked it exists
      const int64_t out = w[0], in = w[1], r = config.rank;
      Rng rng = Rng::stream(seed, "lora_A " + lora_tensor_name(layer, m, false));
      const double bound = 1.0 / std::sqrt(double(in));
      std::vector<float> a(size_t(r * in));
      for (float& x : a) x = float((2 * rng.uniform() - 1) * bound);
      adapter.modules.push_back({layer, m, Tensor::from_f32({r, in}, std::move(a)),
                                 Tensor::from_f32({out, r}, std::vector<float>(size_t(out * r), 0.0f))});
    }
  return adapter;
}

}  // namespace upcycle
