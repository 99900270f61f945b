// The tensors a config implies: names and shapes (the roles' rows, tensor_roles.hpp), for
// validating checkpoints and for building new ones (random init, MoE assembly).
#pragma once
#include <optional>
#include <vector>

#include "core/checkpoint.hpp"
#include "core/tensor_names.hpp"

namespace upcycle {

struct ExpectedTensor {
  TensorId id;
  std::string name;
  Shape shape;
};

// Every tensor of a model with this config, in canonical order, named in `scheme` (by default
// the config's own: default_scheme; HFFused for transformers v5's fused
// experts). Mixtral gets a router and per-expert FFNs in place of the dense FFN.
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& config, std::optional<Scheme> scheme = std::nullopt);

// The scheme a set of Hugging Face names uses: HFFused when fused expert tensors are present,
// else the family's (default_scheme).
Scheme detect_scheme(const ModelConfig& config, const std::vector<TensorInfo>& tensors);
// The names a config's family gives one expert's tensors: Qwen2Moe's (mlp.experts.E.gate_proj) for
// qwen2_moe and qwen3_moe, else Mixtral's (HF).
Scheme default_scheme(const ModelConfig& config);

// Throws InputError when a tensor the config requires is missing or misshapen, or when the
// checkpoint holds tensors the config does not account for.
void check_tensors_match_config(const Checkpoint& ckpt);

}  // namespace upcycle
