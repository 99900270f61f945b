// Small helpers the model's forward and backward share: ops over std::vector buffers, and the
// per-expert pointer arrays the MoE op takes. Internal to trainer/.
#pragma once
#include <cstdint>
#include <vector>

#include "trainer/model.hpp"
#include "trainer/ops/matmul.hpp"
#include "trainer/ops/moe.hpp"
#include "trainer/ops/rmsnorm.hpp"

namespace upcycle {

template <class T>
T* or_null(std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}
template <class T>
const T* or_null(const std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}

// out[N,O] = in[N,I]·W[O,I]ᵀ + bias[O]
template <class T>
std::vector<T> linear(const std::vector<T>& in, const std::vector<T>& W, const std::vector<T>& bias, int64_t N,
                      int64_t I, int64_t O) {
  std::vector<T> out(size_t(N * O));
  ops::matmul_forward(out.data(), in.data(), W.data(), or_null(bias), N, I, O);
  return out;
}

// a += b, elementwise
template <class T>
void add_into(std::vector<T>& a, const std::vector<T>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
}

// out[N,C] = rmsnorm(in[N,C]) ⊙ weight, rstd[N]
template <class T>
void rmsnorm(std::vector<T>& out, std::vector<T>& rstd, const std::vector<T>& in, const std::vector<T>& weight,
             int64_t N, int64_t C, double eps) {
  out.resize(size_t(N * C));
  rstd.resize(size_t(N));
  ops::rmsnorm_forward(out.data(), rstd.data(), in.data(), weight.data(), N, C, eps);
}

// One layer's experts as the pointer arrays ops::moe_forward / moe_backward take.
template <class T>
class ExpertPointers {
 public:
  explicit ExpertPointers(const LayerWeights<T>& w) {
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
  explicit ExpertGradPointers(LayerWeights<T>& g) {
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
