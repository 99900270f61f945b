#include "core/expected_tensors.hpp"

#include "core/error.hpp"

namespace upcycle {

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c, Scheme scheme) {
  const int64_t H = c.hidden_size, V = c.vocab_size, I = c.intermediate_size;
  const int64_t E = c.num_local_experts, EI = c.expert_intermediate_size();
  std::vector<ExpectedTensor> out;
  auto add = [&](Role role, int layer, int expert, Shape shape) {
    TensorId id{role, layer, expert};
    out.push_back({id, tensor_name(id, scheme), std::move(shape)});
  };
  add(Role::TokenEmbedding, -1, -1, {V, H});
  for (int l = 0; l < int(c.num_hidden_layers); ++l) {
    add(Role::AttnNorm, l, -1, {H});
    add(Role::Q, l, -1, {c.q_dim(), H});
    add(Role::K, l, -1, {c.kv_dim(), H});
    add(Role::V, l, -1, {c.kv_dim(), H});
    add(Role::O, l, -1, {H, c.q_dim()});
    if (c.attention_bias) {
      add(Role::QBias, l, -1, {c.q_dim()});
      add(Role::KBias, l, -1, {c.kv_dim()});
      add(Role::VBias, l, -1, {c.kv_dim()});
    }
    add(Role::FfnNorm, l, -1, {H});
    if (!c.is_moe()) {
      add(Role::Gate, l, -1, {I, H});
      add(Role::Up, l, -1, {I, H});
      add(Role::Down, l, -1, {H, I});
      continue;
    }
    add(Role::Router, l, -1, {E, H});
    if (scheme == Scheme::HFFused) {
      add(Role::ExpertsGateUp, l, -1, {E, 2 * EI, H});
      add(Role::ExpertsDown, l, -1, {E, H, EI});
    } else {
      for (int e = 0; e < int(E); ++e) {
        add(Role::ExpertGate, l, e, {EI, H});
        add(Role::ExpertUp, l, e, {EI, H});
        add(Role::ExpertDown, l, e, {H, EI});
      }
    }
    if (c.model_type == "qwen2_moe" && c.shared_expert_intermediate_size > 0) {
      const int64_t S = c.shared_expert_intermediate_size;
      add(Role::SharedGate, l, -1, {S, H});
      add(Role::SharedUp, l, -1, {S, H});
      add(Role::SharedDown, l, -1, {H, S});
      add(Role::SharedRouter, l, -1, {1, H});
    }
  }
  add(Role::FinalNorm, -1, -1, {H});
  if (!c.tie_word_embeddings) add(Role::LmHead, -1, -1, {V, H});
  return out;
}

Scheme detect_scheme(const ModelConfig& config, const std::vector<TensorInfo>& tensors) {
  if (config.model_type == "qwen2_moe") return Scheme::Qwen2Moe;
  for (const auto& t : tensors)
    if (auto id = parse_tensor_name(t.name, Scheme::HFFused); id && id->role == Role::ExpertsGateUp)
      return Scheme::HFFused;
  return Scheme::HF;
}

void check_tensors_match_config(const Checkpoint& ckpt) {
  const Scheme scheme = detect_scheme(ckpt.config(), ckpt.tensors());
  for (const ExpectedTensor& want : expected_tensors(ckpt.config(), scheme)) {
    const TensorInfo* have = ckpt.find(want.name);
    require(have != nullptr, ckpt.path(), "tensor '" + want.name + "'", "required by the config but missing");
    require(have->shape == want.shape, ckpt.path(), "tensor '" + want.name + "'",
            "shape " + shape_string(have->shape) + " but the config implies " + shape_string(want.shape));
  }
}

}  // namespace upcycle
