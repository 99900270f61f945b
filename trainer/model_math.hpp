// Small helpers the model and the decoder share: null for an empty (frozen) buffer, the
// per-expert pointer arrays the MoE ops take, and the weight ops of backends whose weights are
// plain buffers. Internal to the model's implementation (trainer/ and the GPU backend).
#pragma once
#include <cstdint>
#include <type_traits>
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

// The weight ops of a backend B whose weights are buffers of its activation type (B::Weight is
// B::Vec<Act>): B's matmul and embedding ops on the buffers' data. The model reads every weight
// matrix through these, so that a backend of weights in another form (the CPU's stored-dtype
// backend, trainer/stored_backend.hpp) gives its own. B derives from this (its types are not
// complete here: the members are templates).
template <class B>
struct BufferWeightOps {
  // out[N,O] = in[N,I]·Wᵀ + bias
  template <class A, class W>
  static void linear_forward(A* out, const A* in, const W& w, std::type_identity_t<const A*> bias, int64_t N, int64_t I,
                             int64_t O) {
    B::matmul_forward(out, in, w.data(), bias, N, I, O);
  }
  // As ops::matmul_backward.
  template <class A, class G, class W>
  static void linear_backward(A* d_in, G* d_W, std::type_identity_t<G*> d_bias, const A* d_out, const A* in,
                              const W& w, int64_t N, int64_t I, int64_t O) {
    B::matmul_backward(d_in, d_W, d_bias, d_out, in, w.data(), N, I, O);
  }
  // out[N,H] = table[ids[n], :]
  template <class A, class W>
  static void embedding_lookup(A* out, const W& table, const int32_t* ids, int64_t N, int64_t H, int64_t V) {
    B::embedding_forward(out, table.data(), ids, N, H, V);
  }
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
