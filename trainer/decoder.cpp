// Each append runs the layers of Transformer::forward on the new rows only: the same ops in the
// same order, with attention reading the earlier positions from the cache.
#include "trainer/decoder.hpp"

#include <numeric>
#include <stdexcept>
#include <string>

#include "trainer/ops/attention_cached.hpp"
#include "trainer/ops/embedding.hpp"
#include "trainer/ops/matmul.hpp"
#include "trainer/ops/rmsnorm.hpp"
#include "trainer/ops/rope.hpp"
#include "trainer/ops/router.hpp"
#include "trainer/ops/swiglu.hpp"

namespace upcycle {

Decoder::Decoder(const Model& model, int64_t capacity) : model_(model), capacity_(capacity) {
  const ModelConfig& c = model.config();
  if (capacity < 1 || capacity > c.max_position_embeddings)
    throw std::invalid_argument("decoder: capacity " + std::to_string(capacity) + " outside [1, " +
                                std::to_string(c.max_position_embeddings) + "]");
  for (const LayerWeights<float>& w : model.weights().layers) {
    k_cache_.emplace_back(size_t(capacity * c.kv_dim()));
    v_cache_.emplace_back(size_t(capacity * c.kv_dim()));
    if (c.is_moe()) experts_.emplace_back(w);
  }
}

void Decoder::truncate(int64_t n) {
  if (n < 0 || n > length_)
    throw std::invalid_argument("decoder: cannot truncate to " + std::to_string(n) + " of " + std::to_string(length_) +
                                " positions");
  length_ = n;
}

std::vector<float> Decoder::append(std::span<const int32_t> ids) {
  const ModelConfig& c = model_.config();
  const int64_t n = int64_t(ids.size()), H = c.hidden_size, V = c.vocab_size;
  if (n == 0) throw std::invalid_argument("decoder: nothing to append");
  if (n > capacity_ - length_)
    throw std::invalid_argument("decoder: " + std::to_string(n) + " more tokens overflow the cache of " +
                                std::to_string(capacity_) + " positions (" + std::to_string(length_) + " used)");
  x_.resize(size_t(n * H));
  // Throws on an id outside the vocabulary before anything is stored.
  ops::embedding_forward(x_.data(), model_.weights().embedding.data(), ids.data(), n, H, V);
  positions_.resize(size_t(n));
  std::iota(positions_.begin(), positions_.end(), int32_t(length_));
  for (size_t l = 0; l < k_cache_.size(); ++l) {
    attention_block(l, n);
    ffn_block(l, n);
  }
  length_ += n;
  // Only the last row's logits are wanted: the final norm and the head on it alone.
  ops::rmsnorm_forward(normed_.data(), rstd_.data(), x_.data() + (n - 1) * H, model_.weights().final_norm.data(), 1, H,
                       c.rms_norm_eps);
  std::vector<float> logits(static_cast<size_t>(V));
  ops::matmul_forward<float>(logits.data(), normed_.data(), model_.head().data(), nullptr, 1, H, V);
  return logits;
}

// x += attention(rope(q), cached rope(k), cached v)·oᵀ with q, k, v projections of rmsnorm(x).
void Decoder::attention_block(size_t layer, int64_t n) {
  const ModelConfig& c = model_.config();
  const LayerWeights<float>& w = model_.weights().layers[layer];
  const int64_t H = c.hidden_size, nH = c.num_attention_heads, nKV = c.num_key_value_heads;
  rmsnorm(normed_, rstd_, x_, w.attn_norm, n, H, c.rms_norm_eps);
  q_.resize(size_t(n * c.q_dim()));
  float* k = k_cache_[layer].data() + length_ * c.kv_dim();  // the new rows [n,nKV·D]
  float* v = v_cache_[layer].data() + length_ * c.kv_dim();
  ops::matmul_forward<float>(q_.data(), normed_.data(), w.q.data(), or_null(w.q_bias), n, H, c.q_dim());
  ops::matmul_forward<float>(k, normed_.data(), w.k.data(), or_null(w.k_bias), n, H, c.kv_dim());
  ops::matmul_forward<float>(v, normed_.data(), w.v.data(), or_null(w.v_bias), n, H, c.kv_dim());
  ops::rope_forward(q_.data(), q_.data(), positions_.data(), model_.rope(), n, nH);
  ops::rope_forward(k, k, positions_.data(), model_.rope(), n, nKV);
  ops::AttentionShape shape;
  shape.tokens = n;
  shape.heads = nH;
  shape.kv_heads = nKV;
  shape.head_dim = c.head_dim;
  shape.window = c.sliding_window.value_or(0);
  attn_.resize(q_.size());
  ops::attention_cached(attn_.data(), q_.data(), k_cache_[layer].data(), v_cache_[layer].data(), length_, shape);
  out_.resize(x_.size());
  ops::matmul_forward<float>(out_.data(), attn_.data(), w.o.data(), nullptr, n, c.q_dim(), H);
  add_into(x_, out_);
}

// x += the dense SwiGLU FFN, or the top-k renormalised mixture of experts, of rmsnorm(x).
void Decoder::ffn_block(size_t layer, int64_t n) {
  const ModelConfig& c = model_.config();
  const LayerWeights<float>& w = model_.weights().layers[layer];
  const int64_t H = c.hidden_size;
  rmsnorm(normed_, rstd_, x_, w.ffn_norm, n, H, c.rms_norm_eps);
  out_.resize(x_.size());
  if (c.is_moe()) {
    const int64_t E = c.num_local_experts, k = c.num_experts_per_tok;
    router_logits_.resize(size_t(n * E));
    probs_.resize(size_t(n * E));
    weights_.resize(size_t(n * k));
    idx_.resize(size_t(n * k));
    ops::matmul_forward<float>(router_logits_.data(), normed_.data(), w.router.data(), nullptr, n, H, E);
    ops::router_forward(idx_.data(), weights_.data(), probs_.data(), router_logits_.data(), n, E, k);
    const ops::MoeShape shape{n, H, c.expert_intermediate_size(), E, k};
    ops::moe_forward(out_.data(), moe_, normed_.data(), idx_.data(), weights_.data(), experts_[layer].weights(), shape);
  } else {
    const int64_t I = c.intermediate_size;
    gate_.resize(size_t(n * I));
    up_.resize(size_t(n * I));
    act_.resize(size_t(n * I));
    ops::matmul_forward<float>(gate_.data(), normed_.data(), w.gate.data(), nullptr, n, H, I);
    ops::matmul_forward<float>(up_.data(), normed_.data(), w.up.data(), nullptr, n, H, I);
    ops::swiglu_forward(act_.data(), gate_.data(), up_.data(), n * I);
    ops::matmul_forward<float>(out_.data(), act_.data(), w.down.data(), nullptr, n, I, H);
  }
  add_into(x_, out_);
}

}  // namespace upcycle
