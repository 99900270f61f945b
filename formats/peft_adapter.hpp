// PEFT LoRA adapter folders: adapter_config.json (rank, alpha, target modules) beside
// adapter_model.safetensors (each adapted linear layer's A and B), read against the base model
// they adapt and written the way PEFT writes them. The same for MixLoRA's folders (peft_type
// MIXLORA: a LoRA-MoE over a dense base, each FFN target an expert's own LoRA, with a router per
// layer), written the way MixLoRA writes them.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/tensor.hpp"
#include "core/tensor_names.hpp"
#include "core/tensor_roles.hpp"

namespace upcycle {

// The largest rank read or trained: beyond any real adapter, and a bound on what a config can
// make us allocate.
inline constexpr int64_t kMaxLoraRank = 4096;
// The most experts a MixLoRA folder may have (its num_experts).
inline constexpr int64_t kMaxLoraExperts = 256;

// What adapter_config.json says that we compute with.
struct LoraConfig {
  int64_t rank = 0;                         // "r"
  double alpha = 0;                         // "lora_alpha"
  // "target_modules", a list of: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj
  std::vector<std::string> target_modules;
  bool use_rslora = false;                  // "use_rslora"
  double dropout = 0;                       // "lora_dropout"
  std::string base_model;                   // "base_model_name_or_path" (may be empty)
  // MixLoRA (peft_type MIXLORA): "num_experts" and "top_k"; 0 experts: a plain LoRA. Its FFN
  // targets (gate_proj, up_proj, down_proj) are each expert's own, its attention targets shared.
  int64_t experts = 0;
  int64_t top_k = 0;
  double aux_loss_coef = 0.01;  // MixLoRA's "router_aux_loss_coef" (its default): the LoRA-MoE's load balancing
  // What B·A is multiplied by: alpha / r, or alpha / sqrt(r) with rsLoRA.
  double scaling() const;
  bool is_moe() const { return experts > 0; }
};

// One adapted linear layer W [out, in] of layer `layer`: W + scaling · B·A, with A [r, in] and
// B [out, r]. `module` is one of the seven names of LoraConfig::target_modules.
struct LoraModule {
  int64_t layer;
  std::string module;
  Tensor a, b;
  int64_t expert = -1;  // MixLoRA: the expert whose FFN term it is; -1: shared by every token
};

// The base model's role of a module name (q_proj → Role::Q, ...); std::invalid_argument for a
// name not among the seven.
Role lora_module_role(const std::string& module);
// Whether MixLoRA makes a module each expert's own (gate, up and down) rather than shared.
bool lora_module_per_expert(const std::string& module);
// The seven module names, in the order modules are sorted.
const std::vector<std::string>& lora_module_names();
// The module's weight shape [out, in] in `base`; std::nullopt where it has none (an MoE's FFN,
// which is its experts); std::invalid_argument for an unknown name.
std::optional<Shape> lora_module_shape(const ModelConfig& base, const std::string& module);
// PEFT's name of a module's A or B: base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight.
std::string lora_tensor_name(int64_t layer, const std::string& module, bool is_b);
// MixLoRA's: mixlora.layers.N.self_attn.q_proj.lora_A.weight (expert -1, shared) or
// mixlora.layers.N.mlp.gate_proj.experts.E.lora_A.weight; and its router's,
// mixlora.layers.N.mlp.moe_gate.weight.
std::string lora_moe_tensor_name(int64_t layer, const std::string& module, int64_t expert, bool is_b);
std::string lora_moe_router_name(int64_t layer);

// The base tensor a module adds its term to: layer `layer`'s matrix, or an expert's term's
// expert matrix of the LoRA-MoE (Role::ExpertGate, ...).
TensorId lora_module_tensor(const LoraModule& m);

struct LoraAdapter {
  LoraConfig config;
  // Sorted by layer, then expert (shared ones first), then in the module order q, k, v, o, gate,
  // up, down.
  std::vector<LoraModule> modules;
  std::vector<Tensor> routers;  // MixLoRA: each layer's router [E, H]; empty for a plain LoRA
  int64_t parameter_count() const;  // of A, B and the routers
};

// Reads dir/adapter_config.json and dir/adapter_model.safetensors, checking every tensor's name
// and shape against `base`. Tensors stay as stored (f32, f16 or bf16, memory mapped). Refuses
// (InputError naming the file and the field or tensor) what we cannot apply exactly: other PEFT
// types, DoRA, trained biases, modules_to_save, per-module ranks or alphas, pickle files; for
// MixLoRA also routing strategies other than "mixlora", activations other than silu, router
// jitter, experts of their own rank (expert_lora), no FFN target, an MoE base, and a layer
// without its router or an expert without one of its FFN targets.
LoraAdapter read_peft_adapter(const std::filesystem::path& dir, const ModelConfig& base);

// dir/adapter_config.json alone, checked as read_peft_adapter checks it (with no base: for
// `inspect`), and a folder whose weights are a pickle only refused; InputError naming the file.
LoraConfig read_lora_config(const std::filesystem::path& dir);
// dir/adapter_model.safetensors: where a folder's tensors are.
std::filesystem::path adapter_weights_file(const std::filesystem::path& dir);

// Whether `dir` holds an adapter_config.json (a PEFT adapter folder rather than a model).
bool is_peft_adapter_folder(const std::filesystem::path& dir);

// Writes the folder as PEFT does (tensor names without an adapter name), or as MixLoRA does when
// adapter.config.is_moe(), complete or not at all. InputError when `dir` exists and overwrite is
// false, or on I/O failure.
void write_peft_adapter(const LoraAdapter& adapter, const std::filesystem::path& dir, bool overwrite);
// The same two files into the existing folder `dir` (one staged by the caller).
void write_peft_adapter_files(const LoraAdapter& adapter, const std::filesystem::path& dir);

}  // namespace upcycle
