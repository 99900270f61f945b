#include "experiments/methods.hpp"

#include <algorithm>

namespace upcycle {

const std::vector<ExperimentMethod>& experiment_methods() {
  static const std::vector<ExperimentMethod> methods = {
      {"dense", "the dense run's final model, tuned further (no experts)", nullptr},
      {"sparse", "sparse upcycling: every expert a copy of the final FFN, random router", "sparse"},
      {"drop", "drop-upcycling: copies of the final FFN with half of each expert's neurons re-drawn", "drop", false, nullptr,
       nullptr, true, false},
      {"scratch", "LoRAMoE (LoRA experts): new experts with B = 0 and a random router over the dense run's attention terms",
       "scratch", false, nullptr, nullptr, false, true},
      {"btx", "Branch-Train-MiX: the checkpoints' FFNs as experts (a dense run saving E), random router", "btx", true},
      {"upit", "UpIT: the checkpoints' FFNs, grown by the genetic merge search, routers pre-optimised on seed data", "upit"},
      {"upit-no-router", "UpIT with a random router (no pre-optimisation)", "upit", false,
       [](ConvertOptions& c) { c.router = "random"; }},
      {"upit-hidden-router", "UpIT with routers set from the experts' mean hidden states (mergekit's gate)", "upit", false,
       [](ConvertOptions& c) { c.router = "hidden"; }},
      {"upit-random-seed", "UpIT with each seed sample given to a random expert, not the one scoring it best", "upit", false,
       [](ConvertOptions& c) { c.seed_assign = "random"; }},
      {"upit-no-expand", "UpIT without the search: a dense run saving E checkpoints, each an expert", "upit", true,
       [](ConvertOptions& c) { c.no_expand = true; }},
      {"upit-random-parents", "UpIT with the search's parents drawn at random, not among the most distant pairs", "upit", false,
       [](ConvertOptions& c) { c.parents = "random"; }},
      {"upit-function-fitness", "UpIT whose search maximises the experts' diversity in seed loss, not in FFN weights", "upit",
       false, [](ConvertOptions& c) { c.fitness = "function"; }, nullptr, true, false},
      {"upit-shared-final", "UpIT with attention, embeddings and norms from the final checkpoint, not the checkpoints' mean",
       "upit", false, [](ConvertOptions& c) { c.shared_from = int(std::max(c.checkpoints.size(), c.adapters.size())) - 1; }},
      {"upit-global-balance", "UpIT tuned with transformers' global load-balancing loss instead of the per-layer one", "upit",
       false, nullptr, [](TrainOptions& t) { t.aux_loss = AuxLoss::Global; }},
      {"upit-bias-balance", "UpIT tuned with auxiliary-loss-free bias balancing (DeepSeek-V3) instead of the loss", "upit",
       false, nullptr, [](TrainOptions& t) { t.balance = Balance::Bias; }},
  };
  return methods;
}

const ExperimentMethod* find_experiment_method(const std::string& name) {
  for (const ExperimentMethod& m : experiment_methods())
    if (name == m.name) return &m;
  return nullptr;
}

std::vector<std::string> experiment_method_list(const std::string& key, const std::string& text) {
  const std::vector<std::string> names = comma_list(key, text);
  for (const std::string& name : names)
    if (!find_experiment_method(name))
      throw OptionError(key, option_name(key) + ": unknown method '" + name + "' (" + experiment_method_names() + ")");
  return names;
}

std::string experiment_method_names() {
  std::string names;
  for (const ExperimentMethod& m : experiment_methods()) names += (names.empty() ? "" : ", ") + std::string(m.name);
  return names;
}

std::string experiment_methods_help() {
  std::string help;
  for (const ExperimentMethod& m : experiment_methods())
    help += "  " + std::string(m.name) + ": " + m.help + (m.ffn ? m.lora ? "" : " (FFN experts)" : " (LoRA experts)") + "\n";
  return help;
}

}  // namespace upcycle
