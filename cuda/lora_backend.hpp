// The GPU backend of a model with a LoRA adapter applied unmerged (what trainer/stored_backend.hpp
// is on the CPU): cuda::Backend<T>'s buffers and ops, with each weight a frozen base tensor in T
// plus, where the adapter adds one, its term (A and B in fp32, cuda/ops/lora.hpp) after the base
// product; a layer whose experts all share one base FFN (a MixLoRA's LoRA-MoE) runs through
// cuda/ops/lora_moe.hpp, the base products once per token. The base takes no gradient: a weight's
// backward gives its input's gradient and its term's d_a, d_b.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "cuda/backend.hpp"
#include "cuda/ops/lora.hpp"
#include "cuda/ops/lora_moe.hpp"
#include "formats/peft_adapter.hpp"

namespace upcycle::cuda {

// A LoRA term on one matrix W [O,I] on the device: W + scale·B·A. d_a and d_b are its gradients,
// added into by the backward (empty: frozen); the dropout is set by a training engine for each
// micro-batch.
struct DeviceLowRank {
  DeviceBuffer<float> a, b;  // A [rank, I], B [O, rank]
  DeviceBuffer<float> d_a, d_b;
  int64_t rank = 0;
  float scale = 0;
  ops::LoraDropout dropout;
  // As cuda::lora_moe's experts take it.
  LowRankTerm term() {
    return {a.data(), b.data(), scale, rank, d_a.empty() ? nullptr : d_a.data(), d_b.empty() ? nullptr : d_b.data(),
            dropout};
  }
};

// One weight tensor in T, shared (copies read the same device memory: a LoRA-MoE's experts are
// one base FFN), with its term where the adapter has one.
template <class T>
class LoraWeight {
 public:
  LoraWeight() = default;
  explicit LoraWeight(DeviceBuffer<T>&& values) : values_(std::make_shared<DeviceBuffer<T>>(std::move(values))) {}

  T* data() { return values_ ? values_->data() : nullptr; }
  const T* data() const { return values_ ? values_->data() : nullptr; }
  size_t size() const { return values_ ? values_->size() : 0; }
  bool empty() const { return size() == 0; }
  std::vector<T> download() const { return values_ ? values_->download() : std::vector<T>(); }

  // The same with a term added to its products.
  LoraWeight with_low_rank(std::shared_ptr<DeviceLowRank> term) const {
    LoraWeight out = *this;
    out.low_rank_ = std::move(term);
    return out;
  }
  DeviceLowRank* low_rank() const { return low_rank_.get(); }

 private:
  std::shared_ptr<DeviceBuffer<T>> values_;
  std::shared_ptr<DeviceLowRank> low_rank_;
};

template <class T>
using LoraWeights = WeightsOf<LoraWeight<T>>;

// Every tensor of the checkpoint by role, uploaded as T one at a time (read as stored, widened
// to f32 and rounded to T; never the whole model on the host). InputError as load_stored_weights.
template <class T>
LoraWeights<T> load_lora_weights(const Checkpoint& ckpt);

// `adapter` (read against this model) added to `weights` as unmerged terms, A and B uploaded in
// fp32; the terms, in the adapter's module order. A MixLoRA adapter makes the dense base its
// LoRA-MoE (of adapted_config): each layer's experts share its gate, up and down, each with the
// expert's own terms, and its router is the adapter's (as T). As upcycle::apply_adapter.
template <class T>
std::vector<std::shared_ptr<DeviceLowRank>> apply_adapter(LoraWeights<T>& weights, const LoraAdapter& adapter);

template <class T>
struct LoraBackend : Backend<T> {
  using Weight = LoraWeight<T>;

  // What the MoE block keeps for backward, for either kind of experts.
  struct MoeSaved {
    cuda::MoeSaved<T> experts;
    LoraMoeSaved<T> lora;
  };
  // A layer's experts as the moe ops take them: their own matrices, or (shared) one base FFN and
  // each expert's terms.
  struct LayerExperts {
    ExpertWeights<T> experts;
    LoraExperts<T> lora;
    bool shared;
  };
  class Experts {
   public:
    explicit Experts(const LayerWeightsOf<Weight>& w) : own_(w) {
      if (!shares_base(w)) return;
      for (const auto* experts : {&w.expert_gate, &w.expert_up, &w.expert_down})
        for (const Weight& e : *experts) terms_.push_back(e.low_rank() ? e.low_rank()->term() : LowRankTerm{});
      base_ = {w.expert_gate[0].data(), w.expert_up[0].data(), w.expert_down[0].data()};
    }
    // (The terms' array is pointed to here, not when made, so that a moved Experts stays valid.)
    LayerExperts weights() const {
      const size_t E = terms_.size() / 3;
      LoraExperts<T> lora = base_;
      lora.gate_terms = terms_.data(), lora.up_terms = terms_.data() + E, lora.down_terms = terms_.data() + 2 * E;
      return {own_.weights(), lora, !terms_.empty()};
    }

   private:
    // Whether every expert reads one base FFN (each with its own terms or none).
    static bool shares_base(const LayerWeightsOf<Weight>& w) {
      if (w.expert_gate.empty()) return false;
      for (const auto* experts : {&w.expert_gate, &w.expert_up, &w.expert_down})
        for (const Weight& e : *experts)
          if (e.data() != experts->front().data()) return false;
      return true;
    }
    ExpertPointers<T> own_;
    std::vector<LowRankTerm> terms_;  // shared base: [gate, up, down][E]
    LoraExperts<T> base_{};           // shared base: its gate, up and down
  };

  static LoraWeights<T> load(const Checkpoint& ckpt) { return load_lora_weights<T>(ckpt); }

  // out[N,O] = in[N,I]·Wᵀ + bias, plus W's term
  static void linear_forward(T* out, const T* in, const Weight& W, const T* bias, int64_t N, int64_t I, int64_t O) {
    cuda::matmul_forward<T, T>(out, in, W.data(), bias, N, I, O);
    if (const DeviceLowRank* t = W.low_rank())
      cuda::lora_forward<T>(out, in, t->a.data(), t->b.data(), t->scale, N, I, O, t->rank, t->dropout);
  }
  // d_in[N,I] += d_out[N,O]·W and its term's; the term's d_a, d_b added into (where it trains).
  // The base's d_W and d_bias are null (it is frozen).
  static void linear_backward(T* d_in, float* d_W, float* d_bias, const T* d_out, const T* in, const Weight& W,
                              int64_t N, int64_t I, int64_t O) {
    cuda::matmul_backward<T>(d_in, d_W, d_bias, d_out, in, W.data(), N, I, O);
    if (DeviceLowRank* t = W.low_rank()) {
      const LowRankTerm term = t->term();  // null gradients where it is frozen
      cuda::lora_backward<T>(d_in, term.d_a, term.d_b, d_out, in, term.a, term.b, term.scale, N, I, O, term.rank,
                             term.dropout);
    }
  }
  static void moe_forward(T* out, MoeSaved& saved, const T* x, const int32_t* idx, const float* w,
                          const LayerExperts& experts, const ops::MoeShape& shape) {
    if (experts.shared) cuda::lora_moe_forward<T>(out, saved.lora, x, idx, w, experts.lora, shape);
    else cuda::moe_forward<T>(out, saved.experts, x, idx, w, experts.experts, shape);
  }
  // A shared base takes no gradient (d_experts' arrays hold nulls): its terms' are theirs.
  static void moe_backward(T* d_x, float* d_w, const ops::ExpertGrads<float>& g, const T* d_out, const float* w,
                           const LayerExperts& experts, const MoeSaved& saved, const ops::MoeShape& shape) {
    if (experts.shared) cuda::lora_moe_backward<T>(d_x, d_w, d_out, w, experts.lora, saved.lora, shape);
    else
      cuda::moe_backward<T>(d_x, d_w, ExpertGrads{g.gate, g.up, g.down}, d_out, w, experts.experts, saved.experts,
                            shape);
  }
};

}  // namespace upcycle::cuda
