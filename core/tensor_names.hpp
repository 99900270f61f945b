// The one table of tensor names: each tensor's role in the model and its name in each format
// (the way llama.cpp keeps per-architecture name tables). No other code spells a tensor name.
// The other facts about each role: tensor_roles.hpp.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor_roles.hpp"

namespace upcycle {

// Name schemes. HF is Llama/Mistral/Qwen2 and Mixtral's default per-expert layout; HFFused is
// transformers v5's fused experts; Qwen2Moe names experts gate/up/down_proj under mlp.
enum class Scheme { HF, HFFused, Qwen2Moe, GGUF };

// An expert role's TensorId with expert kAllExperts names every expert of the layer stacked in
// one tensor [E, rows, cols] (GGUF's blk.N.ffn_gate_exps): only GGUF has such names.
inline constexpr int kAllExperts = -1;

struct TensorId {
  Role role;
  int layer = -1;   // -1 for tensors outside the layers
  int expert = -1;  // -1 unless one expert's tensor (kAllExperts for an expert role: stacked)
  bool operator==(const TensorId&) const = default;
};

// GGUF's llama3 rope scaling: a tensor of per-frequency divisors [head_dim / 2] (1 for short
// wavelengths, the factor for long ones), which Hugging Face keeps as config.json's rope_scaling.
inline constexpr std::string_view kGgufRopeFreqs = "rope_freqs.weight";

// The name of a tensor in a scheme; std::invalid_argument when the scheme has no such role (or
// no stacked name for it).
std::string tensor_name(const TensorId& id, Scheme scheme);
bool has_name(Role role, Scheme scheme);
// The role of a name in a scheme, or nullopt for a name the table does not know.
std::optional<TensorId> parse_tensor_name(std::string_view name, Scheme scheme);

// The order writers use: embeddings first, then layer by layer (roles in table order, experts
// in index order), then the final norm and the head, then names the table does not know.
// Returns a permutation of indices into `names`.
std::vector<size_t> canonical_order(const std::vector<std::string>& names);

}  // namespace upcycle
