// PEFT LoRA adapter folders: adapter_config.json (rank, alpha, target modules) beside
// adapter_model.safetensors (each adapted linear layer's A and B), read against the base model
// they adapt and written the way PEFT writes them.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/tensor.hpp"
#include "core/tensor_roles.hpp"

namespace upcycle {

// What adapter_config.json says that we compute with.
struct LoraConfig {
  int64_t rank = 0;                         // "r"
  double alpha = 0;                         // "lora_alpha"
  // "target_modules", a list of: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj
  std::vector<std::string> target_modules;
  bool use_rslora = false;                  // "use_rslora"
  double dropout = 0;                       // "lora_dropout"
  std::string base_model;                   // "base_model_name_or_path" (may be empty)
  // What B·A is multiplied by: alpha / r, or alpha / sqrt(r) with rsLoRA.
  double scaling() const;
};

// One adapted linear layer W [out, in] of layer `layer`: W + scaling · B·A, with A [r, in] and
// B [out, r]. `module` is one of the seven names of LoraConfig::target_modules.
struct LoraModule {
  int64_t layer;
  std::string module;
  Tensor a, b;
};

// The base model's role of a module name (q_proj → Role::Q, ...); std::invalid_argument for a
// name not among the seven.
Role lora_module_role(const std::string& module);

struct LoraAdapter {
  LoraConfig config;
  std::vector<LoraModule> modules;  // sorted by layer, then in the module order q, k, v, o, gate, up, down
};

// Reads dir/adapter_config.json and dir/adapter_model.safetensors, checking every tensor's name
// and shape against `base`. Tensors stay as stored (f32, f16 or bf16, memory mapped). Refuses
// (InputError naming the file and the field or tensor) what we cannot apply exactly: other PEFT
// types, DoRA, trained biases, modules_to_save, per-module ranks or alphas, pickle files.
LoraAdapter read_peft_adapter(const std::filesystem::path& dir, const ModelConfig& base);

// Writes the folder as PEFT does (tensor names without an adapter name), complete or not at all.
// InputError when `dir` exists and overwrite is false, or on I/O failure.
void write_peft_adapter(const LoraAdapter& adapter, const std::filesystem::path& dir, bool overwrite);

}  // namespace upcycle
