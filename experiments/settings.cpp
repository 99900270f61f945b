#include "experiments/settings.hpp"

#include "experiments/methods.hpp"
#include "experiments/stages.hpp"
#include "formats/peft_adapter.hpp"

namespace upcycle {

void check_experiment_settings(const ExperimentSettings& s, const std::vector<std::string>& methods) {
  for (const auto& [key, value] : {std::pair<const char*, int64_t>{"top_k", s.top_k},
                                   {"test_samples", s.test_samples},
                                   {"checkpoints", s.checkpoints},
                                   {"batch_tokens", s.batch_tokens},
                                   {"seed_samples", s.seed_samples}})
    require_positive(double(value), key);
  require_not_negative(double(s.base_steps), "base_steps");
  require_not_negative(s.aux_loss_coef, "aux_loss_coef");
  for (const auto& [key, value] : {std::pair{"lr", s.lr}, {"tune_lr", s.tune_lr}})
    require_positive(value, key);
  if (s.experts_kind != "ffn" && s.experts_kind != "lora")
    throw OptionError("experts_kind", option_name("experts_kind") + " must be ffn or lora");
  if (s.lora_rank < 1 || s.lora_rank > kMaxLoraRank)
    throw OptionError("lora_rank", option_name("lora_rank") + " must lie in [1, " + std::to_string(kMaxLoraRank) + "]");
  const bool lora = s.experts_kind == "lora";
  for (const std::string& name : methods)
    if (const ExperimentMethod* m = find_experiment_method(name); m && !(lora ? m->lora : m->ffn))
      throw OptionError("methods", option_name("methods") + ": " + name + " is not a method for " + s.experts_kind +
                                       " experts (" + option_name("experts_kind") + ")");
}

std::filesystem::path initial_model(const ExperimentSettings& s, const std::filesystem::path& fresh, uint64_t seed) {
  if (s.model) return *s.model;
  init_demo_model(fresh, seed);
  return fresh;
}

void set_experiment_tunings(const ExperimentSettings& s, TuneLength dense_length, TuneLength method_length,
                            ExperimentOptions& o) {
  if (s.base_steps > 0) o.base_tune = tune_options({s.base_steps, 0}, s.lr, s.base_steps / 10, s.batch_tokens);
  o.dense_tune = tune_options(dense_length, s.tune_lr, 10, s.batch_tokens);
  o.dense_tune.save_count = s.checkpoints;
  if (s.experts_kind == "lora") o.dense_tune.lora.rank = s.lora_rank;  // every module of the model
  o.tune = tune_options(method_length, s.tune_lr, 10, s.batch_tokens);
  o.convert.seed_min = s.seed_samples;
  o.convert.aux_loss_coef = s.aux_loss_coef;
}

}  // namespace upcycle
