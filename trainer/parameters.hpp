// The model's tensors as a list the optimizer, the checkpoint writer and the freezing rules
// walk: each with its Hugging Face name, shape and role, in canonical order.
#pragma once
#include <bitset>
#include <memory>
#include <string>
#include <vector>

#include "core/checkpoint.hpp"
#include "core/layout.hpp"
#include "trainer/model.hpp"

namespace upcycle {

template <class T>
struct Parameter {
  ExpectedTensor tensor;  // name (Hugging Face scheme), shape, role
  std::vector<T>* values;  // empty where the structure holds nothing (a frozen gradient)
};

// The buffer of one tensor (per-expert roles included; fused expert roles have none). The
// layers and per-expert buffers must exist: parameters() lays them out.
template <class T>
std::vector<T>& tensor_slot(Weights<T>& w, const TensorId& id);

// Every tensor of `w` in canonical order. Per-expert buffers are created as needed, so this
// also lays out an empty Weights for a config.
template <class T>
std::vector<Parameter<T>> parameters(Weights<T>& w, const ModelConfig& config);

// The parts `--freeze` names. Norms belong to no part but `norms`: they gate both the
// attention and the FFN.
enum class Part { Embeddings, Attention, Norms, Router, Experts, Count };
Part part_of(Role role);
using PartSet = std::bitset<size_t(Part::Count)>;
// "router,experts" → the set; UsageError naming an unknown part. "experts" also covers a
// dense model's FFN ("ffn" is its alias).
PartSet parse_parts(const std::string& list);
std::string parts_string(const PartSet& parts);

// AdamW's rule: weight matrices decay; norms and biases do not.
bool decays(Role role);

// Zeros shaped like `w`, except the tensors of frozen parts, left empty.
template <class T>
Weights<T> zeros_like(Weights<T>& w, const ModelConfig& config, const PartSet& frozen = {});

// Sets every element of every (unfrozen) tensor to zero: a fresh gradient.
template <class T>
void zero_fill(Weights<T>& w, const ModelConfig& config);

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
