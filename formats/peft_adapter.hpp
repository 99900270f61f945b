// PEFT LoRA adapter folders: adapter_config.json (rank, alpha, target modules) beside
// adapter_model.safetensors (each adapted linear layer's A and B), read against the base model
// they adapt and written the way PEFT writes them.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/tensor.hpp"
#include "core/tensor_roles.hpp"

namespace upcycle {

// The largest rank read or trained: beyond any real adapter, and a bound on what a config can
// make us allocate.
inline constexpr int64_t kMaxLoraRank = 4096;

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
// The seven module names, in the order modules are sorted.
const std::vector<std::string>& lora_module_names();
// The module's weight shape [out, in] in `base`; std::nullopt where it has none (an MoE's FFN,
// which is its experts); std::invalid_argument for an unknown name.
std::optional<Shape> lora_module_shape(const ModelConfig& base, const std::string& module);
// PEFT's name of a module's A or B: base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight.
std::string lora_tensor_name(int64_t layer, const std::string& module, bool is_b);

struct LoraAdapter {
  LoraConfig config;
  std::vector<LoraModule> modules;  // sorted by layer, then in the module order q, k, v, o, gate, up, down
};

// Reads dir/adapter_config.json and dir/adapter_model.safetensors, checking every tensor's name
// and shape against `base`. Tensors stay as stored (f32, f16 or bf16, memory mapped). Refuses
// (InputError naming the file and the field or tensor) what we cannot apply exactly: other PEFT
// types, DoRA, trained biases, modules_to_save, per-module ranks or alphas, pickle files.
LoraAdapter read_peft_adapter(const std::filesystem::path& dir, const ModelConfig& base);

// Whether `dir` holds an adapter_config.json (a PEFT adapter folder rather than a model).
bool is_peft_adapter_folder(const std::filesystem::path& dir);

// Writes the folder as PEFT does (tensor names without an adapter name), complete or not at all.
// InputError when `dir` exists and overwrite is false, or on I/O failure.
void write_peft_adapter(const LoraAdapter& adapter, const std::filesystem::path& dir, bool overwrite);
// The same two files into the existing folder `dir` (one staged by the caller).
void write_peft_adapter_files(const LoraAdapter& adapter, const std::filesystem::path& dir);

}  // namespace upcycle
