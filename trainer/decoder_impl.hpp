// BasicDecoder's definitions, over any backend; trainer/decoder.cpp instantiates them for the
// CPU and cuda/model.cpp for the GPU. Each append runs the layers of the model's forward on the
// new rows only: the same ops in the same order, with attention reading the earlier positions
// from the cache.
#pragma once
#include <numeric>
#include <stdexcept>
#include <string>

#include "trainer/decoder.hpp"

namespace upcycle {

template <class B>
BasicDecoder<B>::BasicDecoder(const BasicTransformer<B>& model, int64_t capacity) : model_(model), capacity_(capacity) {
  const ModelConfig& c = model.config();
  if (capacity < 1 || capacity > c.max_position_embeddings)
    throw std::invalid_argument("decoder: capacity " + std::to_string(capacity) + " outside [1, " +
                                std::to_string(c.max_position_embeddings) + "]");
  for (const auto& w : model.weights().layers) {
    k_cache_.emplace_back(size_t(capacity * c.kv_dim()));
    v_cache_.emplace_back(size_t(capacity * c.kv_dim()));
    if (c.is_moe()) experts_.emplace_back(w);
  }
}

template <class B>
void BasicDecoder<B>::truncate(int64_t n) {
  if (n < 0 || n > length_)
    throw std::invalid_argument("decoder: cannot truncate to " + std::to_string(n) + " of " + std::to_string(length_) +
                                " positions");
  length_ = n;
}

template <class B>
std::vector<float> BasicDecoder<B>::append(std::span<const int32_t> ids) {
  const ModelConfig& c = model_.config();
  const int64_t n = int64_t(ids.size()), H = c.hidden_size, V = c.vocab_size;
  if (n == 0) throw std::invalid_argument("decoder: nothing to append");
  if (n > capacity_ - length_)
    throw std::invalid_argument("decoder: " + std::to_string(n) + " more tokens overflow the cache of " +
                                std::to_string(capacity_) + " positions (" + std::to_string(length_) + " used)");
  for (int32_t id : ids)
    if (id < 0 || id >= V)
      throw std::invalid_argument("decoder: token " + std::to_string(id) + " outside the vocabulary of " +
                                  std::to_string(V));
  const Vec<int32_t> device_ids = B::upload(std::vector<int32_t>(ids.begin(), ids.end()));
  x_.resize(size_t(n * H));
  B::embedding_lookup(x_.data(), model_.weights().embedding, device_ids.data(), n, H, V);
  std::vector<int32_t> positions(static_cast<size_t>(n));
  std::iota(positions.begin(), positions.end(), int32_t(length_));
  positions_ = B::upload(positions);
  for (size_t l = 0; l < k_cache_.size(); ++l) {
    attention_block(l, n);
    ffn_block(l, n);
  }
  length_ += n;
  // Only the last row's logits are wanted: the final norm and the head on it alone.
  normed_.resize(size_t(H));
  rstd_.resize(1);
  B::rmsnorm_forward(normed_.data(), rstd_.data(), x_.data() + (n - 1) * H, model_.weights().final_norm.data(), 1, H,
                     c.rms_norm_eps);
  Vec<Act> logits(static_cast<size_t>(V));
  B::linear_forward(logits.data(), normed_.data(), model_.head(), nullptr, 1, H, V);
  const auto host = B::download(logits);
  return {host.begin(), host.end()};
}

template <class B>
void BasicDecoder<B>::norm(const typename B::Weight& weight, int64_t n) {
  const ModelConfig& c = model_.config();
  normed_.resize(size_t(n * c.hidden_size));
  rstd_.resize(size_t(n));
  B::rmsnorm_forward(normed_.data(), rstd_.data(), x_.data(), weight.data(), n, c.hidden_size, c.rms_norm_eps);
}

// x += attention(rope(q), cached rope(k), cached v)·oᵀ with q, k, v projections of rmsnorm(x).
template <class B>
void BasicDecoder<B>::attention_block(size_t layer, int64_t n) {
  const ModelConfig& c = model_.config();
  const auto& w = model_.weights().layers[layer];
  const int64_t H = c.hidden_size, nH = c.num_attention_heads, nKV = c.num_key_value_heads;
  norm(w.attn_norm, n);
  q_.resize(size_t(n * c.q_dim()));
  Act* k = k_cache_[layer].data() + length_ * c.kv_dim();  // the new rows [n,nKV·D]
  Act* v = v_cache_[layer].data() + length_ * c.kv_dim();
  B::linear_forward(v, normed_.data(), w.v, or_null(w.v_bias), n, H, c.kv_dim());
  if (c.qk_norm()) {  // Qwen3: each head's q and k normalised, from raw_
    raw_.resize(size_t(n * c.q_dim()));
    head_rstd_.resize(size_t(n * nH));
    B::linear_forward(raw_.data(), normed_.data(), w.q, or_null(w.q_bias), n, H, c.q_dim());
    B::rmsnorm_forward(q_.data(), head_rstd_.data(), raw_.data(), w.q_norm.data(), n * nH, c.head_dim, c.rms_norm_eps);
    B::linear_forward(raw_.data(), normed_.data(), w.k, or_null(w.k_bias), n, H, c.kv_dim());
    B::rmsnorm_forward(k, head_rstd_.data(), raw_.data(), w.k_norm.data(), n * nKV, c.head_dim, c.rms_norm_eps);
  } else {
    B::linear_forward(q_.data(), normed_.data(), w.q, or_null(w.q_bias), n, H, c.q_dim());
    B::linear_forward(k, normed_.data(), w.k, or_null(w.k_bias), n, H, c.kv_dim());
  }
  B::rope_forward(q_.data(), q_.data(), positions_.data(), model_.rope(), n, nH);
  B::rope_forward(k, k, positions_.data(), model_.rope(), n, nKV);
  ops::AttentionShape shape;
  shape.tokens = n;
  shape.heads = nH;
  shape.kv_heads = nKV;
  shape.head_dim = c.head_dim;
  shape.window = c.sliding_window.value_or(0);
  attn_.resize(q_.size());
  B::attention_cached(attn_.data(), q_.data(), k_cache_[layer].data(), v_cache_[layer].data(), length_, shape);
  out_.resize(x_.size());
  B::linear_forward(out_.data(), attn_.data(), w.o, nullptr, n, c.q_dim(), H);
  B::add_into(x_.data(), out_.data(), n * H);
}

// x += the dense SwiGLU FFN, or the top-k mixture of experts (and qwen2_moe's shared expert),
// of rmsnorm(x).
template <class B>
void BasicDecoder<B>::ffn_block(size_t layer, int64_t n) {
  const ModelConfig& c = model_.config();
  const auto& w = model_.weights().layers[layer];
  const int64_t H = c.hidden_size;
  norm(w.ffn_norm, n);
  out_.resize(x_.size());
  if (c.is_moe()) {
    const int64_t E = c.num_local_experts, k = c.num_experts_per_tok;
    router_logits_.resize(size_t(n * E));
    probs_.resize(size_t(n * E));
    weights_.resize(size_t(n * k));
    idx_.resize(size_t(n * k));
    B::router_logits(router_logits_.data(), normed_.data(), w.router.data(), nullptr, n, H, E);
    B::router_forward(idx_.data(), weights_.data(), probs_.data(), router_logits_.data(), nullptr, n, E, k,
                      c.norm_topk_prob);
    const ops::MoeShape shape{n, H, c.expert_intermediate_size(), E, k};
    B::moe_forward(out_.data(), moe_, normed_.data(), idx_.data(), weights_.data(), experts_[layer].weights(), shape);
    if (c.has_shared_expert()) {  // out += σ(normed·shared_routerᵀ) ⊙ the shared FFN of normed
      shared_y_.resize(x_.size());
      swiglu(shared_y_, w.shared_gate, w.shared_up, w.shared_down, c.shared_expert_intermediate_size, n);
      shared_logit_.resize(size_t(n));
      B::router_logits(shared_logit_.data(), normed_.data(), w.shared_router.data(), nullptr, n, H, 1);
      B::sigmoid_gate_forward(out_.data(), shared_y_.data(), shared_logit_.data(), n, H);
    }
  } else {
    swiglu(out_, w.gate, w.up, w.down, c.intermediate_size, n);
  }
  B::add_into(x_.data(), out_.data(), n * H);
}

template <class B>
void BasicDecoder<B>::swiglu(Vec<Act>& out, const typename B::Weight& gate, const typename B::Weight& up,
                             const typename B::Weight& down, int64_t I, int64_t n) {
  const int64_t H = model_.config().hidden_size;
  gate_.resize(size_t(n * I));
  up_.resize(size_t(n * I));
  act_.resize(size_t(n * I));
  B::linear_forward(gate_.data(), normed_.data(), gate, nullptr, n, H, I);
  B::linear_forward(up_.data(), normed_.data(), up, nullptr, n, H, I);
  B::swiglu_forward(act_.data(), gate_.data(), up_.data(), n * I);
  B::linear_forward(out.data(), act_.data(), down, nullptr, n, I, H);
}

}  // namespace upcycle
