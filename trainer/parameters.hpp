// The model's tensors as a list the optimizer, the checkpoint writer and the freezing rules
// walk: each with its Hugging Face name, shape and role, in canonical order.
#pragma once
#include <bitset>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/checkpoint.hpp"
#include "core/expected_tensors.hpp"
#include "trainer/weights.hpp"

namespace upcycle {

// One tensor of a WeightsOf<V>: its Hugging Face name, shape and role, and its buffer.
template <class V>
struct ParameterOf {
  ExpectedTensor tensor;  // name (Hugging Face scheme), shape, role
  V* values;              // empty where the structure holds nothing (a frozen gradient)
};
template <class T>
using Parameter = ParameterOf<std::vector<T>>;

// The buffer of one tensor (per-expert roles included; fused expert roles have none). The
// layers and per-expert buffers must exist: parameters() lays them out.
template <class V>
V& tensor_slot(WeightsOf<V>& w, const TensorId& id) {
  switch (id.role) {
    case Role::TokenEmbedding: return w.embedding;
    case Role::FinalNorm: return w.final_norm;
    case Role::LmHead: return w.lm_head;
    default: break;
  }
  LayerWeightsOf<V>& l = w.layers.at(size_t(id.layer));
  switch (id.role) {
    case Role::AttnNorm: return l.attn_norm;
    case Role::Q: return l.q;
    case Role::K: return l.k;
    case Role::V: return l.v;
    case Role::O: return l.o;
    case Role::QBias: return l.q_bias;
    case Role::KBias: return l.k_bias;
    case Role::VBias: return l.v_bias;
    case Role::QNorm: return l.q_norm;
    case Role::KNorm: return l.k_norm;
    case Role::FfnNorm: return l.ffn_norm;
    case Role::Gate: return l.gate;
    case Role::Up: return l.up;
    case Role::Down: return l.down;
    case Role::Router: return l.router;
    case Role::ExpertGate: return l.expert_gate.at(size_t(id.expert));
    case Role::ExpertUp: return l.expert_up.at(size_t(id.expert));
    case Role::ExpertDown: return l.expert_down.at(size_t(id.expert));
    case Role::SharedGate: return l.shared_gate;
    case Role::SharedUp: return l.shared_up;
    case Role::SharedDown: return l.shared_down;
    case Role::SharedRouter: return l.shared_router;
    default: throw std::logic_error("tensor_slot: role without a buffer of its own");
  }
}

// Every tensor of `w` in canonical order. Per-expert buffers are created as needed, so this
// also lays out an empty WeightsOf for a config.
template <class V>
std::vector<ParameterOf<V>> parameters(WeightsOf<V>& w, const ModelConfig& config) {
  // Sized first: the pointers handed out must not move when a later tensor is added.
  w.layers.resize(size_t(config.num_hidden_layers));
  for (auto& l : w.layers)
    for (auto* experts : {&l.expert_gate, &l.expert_up, &l.expert_down}) experts->resize(size_t(config.num_local_experts));
  std::vector<ParameterOf<V>> out;
  for (auto& e : expected_tensors(config, default_scheme(config))) {
    V* values = &tensor_slot(w, e.id);
    out.push_back({std::move(e), values});
  }
  return out;
}

// The parts `--freeze` names (each role's part: role_info(role).part).
using PartSet = std::bitset<size_t(Part::Count)>;
// "router,experts" → the set; UsageError naming an unknown part. "experts" also covers a
// dense model's FFN ("ffn" is its alias).
PartSet parse_parts(const std::string& list);
std::string parts_string(const PartSet& parts);

// AdamW's rule: weights decay; norms and biases do not.
inline bool decays(Role role) { return role_info(role).kind == TensorKind::Weight; }

// Zeros shaped like `w`, except the tensors of frozen parts, left empty.
template <class T>
Weights<T> zeros_like(Weights<T>& w, const ModelConfig& config, const PartSet& frozen = {});

// The weights as a checkpoint of f32 tensors (Hugging Face names), computed tensor by tensor
// when written; `w` must outlive it. Side files (tokenizer etc.) are carried from `like`.
template <class T>
std::unique_ptr<Checkpoint> as_checkpoint(Weights<T>& w, const ModelConfig& config, const Checkpoint* like = nullptr);

// Number of elements, summed over the tensors for which `pred(role)` holds.
template <class T, class Pred>
int64_t count_elements(Weights<T>& w, const ModelConfig& config, Pred pred) {
  int64_t n = 0;
  for (const auto& p : parameters(w, config))
    if (pred(p.tensor.id.role)) n += int64_t(p.values->size());
  return n;
}

}  // namespace upcycle
