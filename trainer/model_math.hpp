// Small helpers the model and the decoder share: null for an empty (frozen) buffer, and the
// per-expert pointer arrays the MoE ops take. Internal to the
// model's implementation (trainer/ and the GPU backend).
#pragma once
#include <cstdint>
#include <vector>

#include "trainer/ops/moe.hpp"
#include "trainer/weights.hpp"

namespace upcycle {

// The buffer's data, or null when it is empty (a frozen tensor, an absent bias); any buffer
// with data() and empty() (std::vector, the GPU's DeviceBuffer).
template <class V>
auto or_null(V& v) -> decltype(v.data()) {
  return v.empty() ? nullptr : v.data();
}

// One layer's experts as the pointer arrays ops::moe_forward / moe_backward take (host arrays
// of the buffers' pointers, device pointers on the GPU).
template <class T>
class ExpertPointers {
 public:
  template <class V>
  explicit ExpertPointers(const LayerWeightsOf<V>& w) {
    for (size_t e = 0; e < w.expert_gate.size(); ++e) {
      gate_.push_back(w.expert_gate[e].data());
      up_.push_back(w.expert_up[e].data());
      down_.push_back(w.expert_down[e].data());
    }
  }
  ops::ExpertWeights<T> weights() const { return {gate_.data(), up_.data(), down_.data()}; }

 private:
  std::vector<const T*> gate_, up_, down_;
};

// A layer's expert gradients; null arrays where the experts are frozen.
template <class T>
class ExpertGradPointers {
 public:
  template <class V>
  explicit ExpertGradPointers(LayerWeightsOf<V>& g) {
    for (size_t e = 0; e < g.expert_gate.size(); ++e) {
      gate_.push_back(or_null(g.expert_gate[e]));
      up_.push_back(or_null(g.expert_up[e]));
      down_.push_back(or_null(g.expert_down[e]));
    }
  }
  ops::ExpertGrads<T> grads() const {
    if (gate_.empty()) return {};  // no expert buffers at all: frozen
    return {gate_.data(), up_.data(), down_.data()};
  }

 private:
  std::vector<T*> gate_, up_, down_;
};

}  // namespace upcycle
