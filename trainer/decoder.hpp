// Incremental decoding: a model's forward pass over one sequence, a few tokens at a time, with
// every layer's keys and values kept in a cache so that each new token attends to the earlier
// ones without recomputing them. TokenDecoder is what generation drives; BasicDecoder<B> is it
// over a backend B (Decoder on the CPU; the GPU's engine makes one over cuda::Backend). Shapes
// as in trainer/model.hpp; n is the tokens of one append, P the position of its first.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "trainer/model.hpp"
#include "trainer/model_math.hpp"

namespace upcycle {

class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  // Runs ids at positions length() .. length()+n-1, storing their keys and values, and returns
  // the logits [V] of the last one (the next token's). std::invalid_argument, with nothing
  // stored, when ids is empty, an id is outside the vocabulary or the cache would overflow.
  virtual std::vector<float> append(std::span<const int32_t> ids) = 0;
  virtual int64_t length() const = 0;
  virtual int64_t capacity() const = 0;
  // Forgets positions >= n (0 <= n <= length(), else std::invalid_argument), so that a shared
  // prompt is computed once and continued several ways.
  virtual void truncate(int64_t n) = 0;
};

template <class B>
class BasicDecoder final : public TokenDecoder {
 public:
  // Holds a reference to `model`, which must outlive the decoder. The cache is allocated here,
  // once: capacity positions, 1 <= capacity <= max_position_embeddings, else
  // std::invalid_argument.
  BasicDecoder(const BasicTransformer<B>& model, int64_t capacity);

  std::vector<float> append(std::span<const int32_t> ids) override;
  int64_t length() const override { return length_; }
  int64_t capacity() const override { return capacity_; }
  void truncate(int64_t n) override;

 private:
  using Act = typename B::Act;
  using Stat = typename B::Stat;
  template <class U>
  using Vec = typename B::template Vec<U>;

  // x_ [n,H] += attention (writing the cache's rows P .. P+n-1), then += FFN.
  void attention_block(size_t layer, int64_t n);
  void ffn_block(size_t layer, int64_t n);
  // out [n,H] = (silu(normed·gateᵀ) ⊙ normed·upᵀ)·downᵀ, an FFN of width I
  void swiglu(Vec<Act>& out, const typename B::Weight& gate, const typename B::Weight& up,
              const typename B::Weight& down, int64_t I, int64_t n);
  // normed_ [n,H] = rmsnorm(x_) ⊙ weight
  void norm(const typename B::Weight& weight, int64_t n);

  const BasicTransformer<B>& model_;
  int64_t capacity_, length_ = 0;
  std::vector<Vec<Act>> k_cache_, v_cache_;  // per layer [capacity, nKV·D], k after rope
  std::vector<typename B::Experts> experts_;  // per layer; empty for dense
  // Scratch, reused across appends (resized when n changes).
  Vec<int32_t> positions_;                          // [n]
  Vec<Act> x_, normed_, q_, attn_, out_;            // [n,H], [n,H], [n,nH·D], [n,nH·D], [n,H]
  Vec<Stat> rstd_;                                  // [n]
  Vec<Act> raw_;                                    // qwen3: q or k before its per-head norm
  Vec<Stat> head_rstd_;                             // qwen3: that norm's 1/rms [n·nH]
  Vec<Act> gate_, up_, act_;                        // dense: [n,I]; qwen2_moe's shared expert: [n,Is]
  Vec<Act> shared_y_;                               // qwen2_moe: the shared expert's output [n,H]
  Vec<Stat> shared_logit_;                          // and its gate's logit [n]
  Vec<Stat> router_logits_, probs_, weights_;       // MoE: [n,E], [n,E], [n,k]
  Vec<int32_t> idx_;                                // MoE: [n,k]
  typename B::MoeSaved moe_;
};

using Decoder = BasicDecoder<CpuBackend<float>>;
extern template class BasicDecoder<CpuBackend<float>>;

}  // namespace upcycle
