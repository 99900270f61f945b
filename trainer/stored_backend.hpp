// The CPU backend over weights in their stored dtype (trainer/stored_weights.hpp): CpuBackend<float>'s
// buffers and ops, with every weight matrix read in place by the stored matmul
// (trainer/ops/stored_matmul.hpp), plus a LoRA adapter's unmerged term where one is applied
// (trainer/ops/lora.hpp) and a LoRA-MoE's experts over their shared base (trainer/ops/lora_moe.hpp), and the embedding's rows widened as they are looked up. What
// inference runs on (forward, eval, generate), so that the model is never held in f32, and
// what training with frozen parts or in bf16 runs on: the frozen weights' backward gives the
// inputs' gradients alone; the trained ones (f32 masters) get theirs too, with the f32 ops' bits
// (or in bf16 with bf16_products).
#pragma once
#include <stdexcept>
#include <vector>

#include "trainer/cpu_backend.hpp"
#include "trainer/ops/lora.hpp"
#include "trainer/ops/lora_moe.hpp"
#include "trainer/stored_weights.hpp"

namespace upcycle {

struct CpuStoredBackend : CpuBackend<float> {
  using Weight = StoredWeight;

  // What the MoE block keeps for backward, for either kind of experts.
  struct MoeSaved {
    ops::MoeSaved<float> experts;
    ops::LoraMoeSaved lora;
  };
  // A layer's experts as the stored moe ops take them, whether they train (their tensors are f32
  // masters then, StoredWeight::master), and the layer, whose streamed experts are done with
  // after each op. Experts that share one frozen base FFN (a LoRA-MoE's: experts_share_base)
  // are given as `lora` instead, for ops::lora_moe.
  struct LayerExperts : ops::StoredExperts {
    bool trained;
    const LayerWeightsOf<StoredWeight>* layer;
    const ops::LoraExperts* lora;
    void done() const {
      for (const auto* experts : {&layer->expert_gate, &layer->expert_up, &layer->expert_down})
        for (const StoredWeight& w : *experts) w.done();
    }
  };
  class Experts {
   public:
    explicit Experts(const LayerWeightsOf<StoredWeight>& w) : layer_(&w) {
      if (experts_share_base(w)) {
        for (const auto* experts : {&w.expert_gate, &w.expert_up, &w.expert_down})
          for (const StoredWeight& e : *experts) terms_.push_back(low_rank_term(e.low_rank()));
        const size_t E = w.expert_gate.size();
        lora_ = {w.expert_gate[0].matrix(), w.expert_up[0].matrix(), w.expert_down[0].matrix(),
                 terms_.data(),             terms_.data() + E,       terms_.data() + 2 * E};
        return;
      }
      for (size_t e = 0; e < w.expert_gate.size(); ++e) {
        gate_.push_back(w.expert_gate[e].matrix());
        up_.push_back(w.expert_up[e].matrix());
        down_.push_back(w.expert_down[e].matrix());
      }
    }
    LayerExperts weights() const {
      const bool trained = !layer_->expert_gate.empty() && layer_->expert_gate[0].trained();
      return {{gate_.data(), up_.data(), down_.data()}, trained, layer_, terms_.empty() ? nullptr : &lora_};
    }

   private:
    static ops::LowRankTerm low_rank_term(const LowRank* t) {
      if (!t) return {};
      return {t->a.data(), t->b.data(), t->scale, t->rank, t->d_a, t->d_b, t->dropout};
    }
    const LayerWeightsOf<StoredWeight>* layer_;
    std::vector<ops::StoredMatrix> gate_, up_, down_;
    std::vector<ops::LowRankTerm> terms_;  // [gate, up, down][E]
    ops::LoraExperts lora_{};
  };

  static StoredWeights load(const Checkpoint& ckpt) { return load_stored_weights(ckpt); }

  // out[N,O] = in[N,I]·Wᵀ + bias
  static void linear_forward(float* out, const float* in, const StoredWeight& W, const float* bias, int64_t N,
                             int64_t I, int64_t O) {
    ops::stored_matmul_forward(out, in, matrix(W, I, O), bias, N);
    if (const LowRank* t = W.low_rank())
      ops::lora_forward(out, in, t->a.data(), t->b.data(), t->scale, N, I, O, t->rank, t->dropout);
    W.done();
  }
  // d_in[N,I] += d_out[N,O]·W, and a trained W's gradients; std::logic_error when a frozen
  // weight's gradient is asked for.
  static void linear_backward(float* d_in, float* d_W, float* d_bias, const float* d_out, const float* in,
                              const StoredWeight& W, int64_t N, int64_t I, int64_t O) {
    if ((d_W || d_bias) && !W.trained())
      throw std::logic_error("CpuStoredBackend: weights in their stored dtype are frozen");
    const ops::StoredMatrix m = matrix(W, I, O);
    if (d_in) ops::stored_matmul_backward_input(d_in, d_out, m, N);
    if (const LowRank* t = W.low_rank())
      ops::lora_backward(d_in, t->d_a, t->d_b, d_out, in, t->a.data(), t->b.data(), t->scale, N, I, O, t->rank,
                         t->dropout);
    if (d_W || d_bias) ops::stored_matmul_backward_weight(d_W, d_bias, d_out, in, m, N);
    W.done();
  }
  static void embedding_lookup(float* out, const StoredWeight& table, const int32_t* ids, int64_t N, int64_t H,
                               int64_t V) {
    ops::stored_gather_rows(out, matrix(table, H, V), ids, N);
  }
  static void moe_forward(float* out, MoeSaved& saved, const float* x, const int32_t* idx, const float* w,
                          const LayerExperts& experts, const ops::MoeShape& shape) {
    if (experts.lora) ops::lora_moe_forward(out, saved.lora, x, idx, w, *experts.lora, shape);
    else ops::moe_forward(out, saved.experts, x, idx, w, experts, shape, experts.trained);
    experts.done();
  }
  // A LoRA-MoE's shared base takes no gradient (d_experts must be empty): its terms' are theirs.
  static void moe_backward(float* d_x, float* d_w, const ops::ExpertGrads<float>& d_experts, const float* d_out,
                           const float* w, const LayerExperts& experts, const MoeSaved& saved,
                           const ops::MoeShape& shape) {
    if (experts.lora) ops::lora_moe_backward(d_x, d_w, d_out, w, *experts.lora, saved.lora, shape);
    else ops::moe_backward(d_x, d_w, d_experts, d_out, w, experts, saved.experts, shape);
    experts.done();
  }

 private:
  // W as a matrix [O, I]; std::logic_error when it is not that shape (a caller's mistake).
  static ops::StoredMatrix matrix(const StoredWeight& W, int64_t I, int64_t O) {
    const ops::StoredMatrix m = W.matrix();
    if (m.rows != O || m.cols != I) throw std::logic_error("CpuStoredBackend: a weight of another shape");
    return m;
  }
};

}  // namespace upcycle
