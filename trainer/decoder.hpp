// Incremental decoding on the CPU: a Model's forward pass over one sequence, a few tokens at a
// time, with every layer's keys and values kept in a cache so that each new token attends to the
// earlier ones without recomputing them. Shapes as in trainer/model.hpp; n is the tokens of one
// append, P the position of its first.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "trainer/model.hpp"
#include "trainer/model_math.hpp"

namespace upcycle {

class Decoder {
 public:
  // Holds a reference to `model`, which must outlive the decoder. The cache is allocated here,
  // once: capacity positions, 1 <= capacity <= max_position_embeddings, else
  // std::invalid_argument.
  Decoder(const Model& model, int64_t capacity);

  // Runs ids at positions length() .. length()+n-1, storing their keys and values, and returns
  // the logits [V] of the last one (the next token's). std::invalid_argument, with nothing
  // stored, when ids is empty, an id is outside the vocabulary or the cache would overflow.
  std::vector<float> append(std::span<const int32_t> ids);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  // Forgets positions >= n (0 <= n <= length(), else std::invalid_argument), so that a shared
  // prompt is computed once and continued several ways.
  void truncate(int64_t n);

 private:
  // x_ [n,H] += attention (writing the cache's rows P .. P+n-1), then += FFN.
  void attention_block(size_t layer, int64_t n);
  void ffn_block(size_t layer, int64_t n);

  const Model& model_;
  int64_t capacity_, length_ = 0;
  std::vector<std::vector<float>> k_cache_, v_cache_;  // per layer [capacity, nKV·D], k after rope
  std::vector<ExpertPointers<float>> experts_;         // per layer; empty for dense
  // Scratch, reused across appends (resizing within capacity does not reallocate).
  std::vector<int32_t> positions_;                         // [n]
  std::vector<float> x_, normed_, rstd_, q_, attn_, out_;  // [n,H], [n,H], [n], [n,nH·D], [n,nH·D], [n,H]
  std::vector<float> gate_, up_, act_;                     // dense: [n,I]
  std::vector<float> router_logits_, probs_, weights_;     // MoE: [n,E], [n,E], [n,k]
  std::vector<int32_t> idx_;                               // MoE: [n,k]
  ops::MoeSaved<float> moe_;
};

}  // namespace upcycle
