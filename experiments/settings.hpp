// What `demo` and `sweep` share: the starting model, the tunings' rates and sizes, the seed, as
// rows that each command's option table takes in (core/option_table.hpp).
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/option_table.hpp"
#include "experiments/experiment.hpp"

namespace upcycle {

struct ExperimentSettings {
  std::optional<std::filesystem::path> model;  // a dense model (with a tokenizer); default: a new one
  int top_k = 2;
  int64_t test_samples = 240;  // synthetic test samples (and of each held-out set)
  int64_t base_steps = 800;    // steps of the base tuning (0: none)
  int64_t checkpoints = 4;     // checkpoints the dense run saves (UpIT's K)
  double lr = 3e-3;            // peak learning rate of the base tuning
  double tune_lr = 1e-3;       // of the dense run and of each method
  int64_t batch_tokens = 2048;
  int64_t seed_samples = 100;  // UpIT's seed set: at least this many training samples
  // ffn: experts are FFNs (the dense run tunes the whole model, the MoEs are Mixtrals); lora: the
  // dense run trains a LoRA adapter of lora_rank on the frozen model, and the MoEs are LoRA-MoEs of
  // its adapters (MixLoRA folders), UpIT's main setting.
  std::string experts_kind = "ffn";
  int64_t lora_rank = 8;
  // The MoEs' load-balancing coefficient. Not the tool's 0.01: on the demo's model at 8 experts,
  // 0.01 left layer 0's idlest expert at 0.21 of an even share; 0.03 kept every layer above 0.47
  // at no cost in loss (README, "What the demo shows").
  double aux_loss_coef = 0.03;
  uint64_t seed = 0;
};

// The settings' rows for an options struct S that holds them at settings(s).
template <class S, class Get>
void add_settings_rows(OptionTable<S>& table, Get settings) {
  auto row = [&](const char* key, const char* help, auto field) {
    table.push_back(option<S>(key, help, [settings, field](S& s) -> auto& { return field(settings(s)); }));
  };
  using E = ExperimentSettings;
  row("model", "a dense model (with a tokenizer) to start from instead of a new one", [](E& e) -> auto& { return e.model; });
  row("top_k", "experts per token", [](E& e) -> auto& { return e.top_k; });
  row("test_samples", "synthetic test samples (and of each held-out set)", [](E& e) -> auto& { return e.test_samples; });
  row("base_steps", "steps of the base tuning (0: none)", [](E& e) -> auto& { return e.base_steps; });
  row("checkpoints", "checkpoints the dense run saves (UpIT's K)", [](E& e) -> auto& { return e.checkpoints; });
  row("lr", "peak learning rate of the base tuning", [](E& e) -> auto& { return e.lr; });
  row("tune_lr", "peak learning rate of the dense run and of each method", [](E& e) -> auto& { return e.tune_lr; });
  row("batch_tokens", "tokens per step", [](E& e) -> auto& { return e.batch_tokens; });
  row("seed_samples", "UpIT's seed set: at least this many training samples", [](E& e) -> auto& { return e.seed_samples; });
  row("aux_loss_coef", "the MoEs' load-balancing coefficient (router_aux_loss_coef)",
      [](E& e) -> auto& { return e.aux_loss_coef; });
  row("experts_kind",
      "ffn (FFN experts: the dense run tunes the model, the MoEs are Mixtrals) or lora (the dense run trains a LoRA "
      "adapter on the frozen model; the MoEs are LoRA-MoEs of its adapters)",
      [](E& e) -> auto& { return e.experts_kind; });
  row("lora_rank", "lora: the adapters' rank", [](E& e) -> auto& { return e.lora_rank; });
  row("seed", "seed of the data, the models and every stage", [](E& e) -> auto& { return e.seed; });
}

// OptionError for any of them out of range, or a method of `methods` that the experts' kind
// lacks, before any work is done.
void check_experiment_settings(const ExperimentSettings& s, const std::vector<std::string>& methods);

// s.model, else a new model in `fresh` (made unless it exists) from the seed.
std::filesystem::path initial_model(const ExperimentSettings& s, const std::filesystem::path& fresh, uint64_t seed);

// o.base_tune (when base_steps > 0: the caller sets o.base_dir), o.dense_tune (saving
// `checkpoints`), o.tune and o.convert. The dense run and each method's tuning last
// dense_length and method_length.
void set_experiment_tunings(const ExperimentSettings& s, TuneLength dense_length, TuneLength method_length,
                            ExperimentOptions& o);

}  // namespace upcycle
