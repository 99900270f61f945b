// The methods an experiment compares, by name: the baselines and UpIT's ablations, each as the
// convert and tune options that make it. One table; `demo`, `sweep` and their help read it.
#pragma once
#include <string>
#include <vector>

#include "convert/convert.hpp"
#include "trainer/train.hpp"

namespace upcycle {

struct ExperimentMethod {
  const char* name;
  const char* help;
  const char* convert;   // convert's --method; nullptr for dense (no conversion)
  // The dense run it converts saves E checkpoints instead of K (no expansion: more checkpoints).
  bool checkpoint_per_expert = false;
  void (*change_convert)(ConvertOptions&) = nullptr;  // the ablation's change, if any
  void (*change_tune)(TrainOptions&) = nullptr;
  bool ffn = true, lora = true;  // the kinds of experts it is a method for
};

const std::vector<ExperimentMethod>& experiment_methods();

// The method named `name`; nullptr when there is none.
const ExperimentMethod* find_experiment_method(const std::string& name);

// "dense,sparse,upit" as method names; OptionError naming `key` for an empty item or an unknown
// method.
std::vector<std::string> experiment_method_list(const std::string& key, const std::string& text);

// "dense, sparse, ..." for errors, and a line per method for help texts.
std::string experiment_method_names();
std::string experiment_methods_help();

}  // namespace upcycle
