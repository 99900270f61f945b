// The forward pass: embedding, then per layer attention and FFN (dense SwiGLU or routed
// experts) each behind an rmsnorm and added to the residual stream, then the final norm and the
// language-model head.
#include "trainer/model.hpp"

#include <stdexcept>

#include "trainer/model_math.hpp"
#include "trainer/ops/attention.hpp"
#include "trainer/ops/embedding.hpp"
#include "trainer/ops/rmsnorm.hpp"
#include "trainer/ops/router.hpp"
#include "trainer/ops/swiglu.hpp"

namespace upcycle {

namespace {

void check_batch(const Batch& b) {
  if (b.positions.size() != b.ids.size()) throw std::invalid_argument("forward: ids and positions differ in length");
  if (b.cu_seqlens.size() < 2) throw std::invalid_argument("forward: cu_seqlens needs at least two offsets");
}

}  // namespace

Batch pack(const std::vector<std::vector<int32_t>>& sequences) {
  Batch b;
  b.cu_seqlens.push_back(0);
  for (const auto& s : sequences) {
    b.ids.insert(b.ids.end(), s.begin(), s.end());
    for (size_t p = 0; p < s.size(); ++p) b.positions.push_back(int32_t(p));
    b.cu_seqlens.push_back(int32_t(b.ids.size()));
  }
  return b;
}

template <class T>
Transformer<T>::Transformer(const Checkpoint& ckpt) : Transformer(ckpt.config(), load_weights<T>(ckpt), ckpt.path()) {}

template <class T>
Transformer<T>::Transformer(ModelConfig config, Weights<T> weights, const std::filesystem::path& source)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      rope_(config_.head_dim, config_.max_position_embeddings, config_.rope_theta, rope_scaling(config_, source)) {}

template <class T>
std::vector<T> Transformer<T>::forward(const Batch& batch) const {
  Activations<T> acts;
  forward_hidden(batch, acts);
  const int64_t N = int64_t(batch.ids.size());
  return linear(acts.final_out, head(), {}, N, config_.hidden_size, config_.vocab_size);  // [N,V]
}

template <class T>
std::vector<std::vector<T>> Transformer<T>::ffn_inputs(const Batch& batch) const {
  Activations<T> acts;
  forward_hidden(batch, acts);
  std::vector<std::vector<T>> out;
  for (auto& layer : acts.layers) out.push_back(std::move(layer.ffn_in));
  return out;
}

template <class T>
void Transformer<T>::forward_hidden(const Batch& batch, Activations<T>& acts) const {
  check_batch(batch);
  const ModelConfig& c = config_;
  const int64_t N = int64_t(batch.ids.size()), H = c.hidden_size, V = c.vocab_size;
  std::vector<T> x(size_t(N * H));  // [N,H]
  ops::embedding_forward(x.data(), weights_.embedding.data(), batch.ids.data(), N, H, V);
  acts.layers.resize(weights_.layers.size());
  for (size_t l = 0; l < weights_.layers.size(); ++l) {
    const LayerWeights<T>& w = weights_.layers[l];
    LayerActivations<T>& a = acts.layers[l];
    a.x = std::move(x);
    attention_block(w, a, batch);
    x = a.h;
    add_into(x, c.is_moe() ? moe_ffn(w, a) : dense_ffn(w, a));
  }
  acts.x = std::move(x);
  rmsnorm(acts.final_out, acts.final_rstd, acts.x, weights_.final_norm, N, H, c.rms_norm_eps);
}

template <class T>
ops::AttentionShape Transformer<T>::attention_shape(int64_t N) const {
  ops::AttentionShape shape;
  shape.tokens = N;
  shape.heads = config_.num_attention_heads;
  shape.kv_heads = config_.num_key_value_heads;
  shape.head_dim = config_.head_dim;
  shape.window = config_.sliding_window.value_or(0);
  return shape;
}

// h = x + attention(rope(q), rope(k), v)·oᵀ with q, k, v projections of rmsnorm(x).
template <class T>
void Transformer<T>::attention_block(const LayerWeights<T>& w, LayerActivations<T>& a, const Batch& batch) const {
  const ModelConfig& c = config_;
  const int64_t N = int64_t(batch.ids.size()), H = c.hidden_size;
  rmsnorm(a.attn_in, a.attn_rstd, a.x, w.attn_norm, N, H, c.rms_norm_eps);
  a.q = linear(a.attn_in, w.q, w.q_bias, N, H, c.q_dim());   // [N,nH·D]
  a.k = linear(a.attn_in, w.k, w.k_bias, N, H, c.kv_dim());  // [N,nKV·D]
  a.v = linear(a.attn_in, w.v, w.v_bias, N, H, c.kv_dim());  // [N,nKV·D]
  ops::rope_forward(a.q.data(), a.q.data(), batch.positions.data(), rope_, N, c.num_attention_heads);
  ops::rope_forward(a.k.data(), a.k.data(), batch.positions.data(), rope_, N, c.num_key_value_heads);
  a.attn.resize(a.q.size());
  a.lse.resize(size_t(N * c.num_attention_heads));
  ops::attention_forward(a.attn.data(), a.lse.data(), a.q.data(), a.k.data(), a.v.data(), batch.cu_seqlens.data(),
                         int64_t(batch.cu_seqlens.size()) - 1, attention_shape(N));
  a.h = a.x;
  add_into(a.h, linear(a.attn, w.o, {}, N, c.q_dim(), H));
}

// (silu(ffn_in·gateᵀ) ⊙ ffn_in·upᵀ)·downᵀ   [N,H], ffn_in = rmsnorm(h)
template <class T>
std::vector<T> Transformer<T>::dense_ffn(const LayerWeights<T>& w, LayerActivations<T>& a) const {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, N = int64_t(a.h.size()) / H;
  rmsnorm(a.ffn_in, a.ffn_rstd, a.h, w.ffn_norm, N, H, c.rms_norm_eps);
  a.gate = linear(a.ffn_in, w.gate, {}, N, H, I);
  a.up = linear(a.ffn_in, w.up, {}, N, H, I);
  a.act.resize(a.gate.size());
  ops::swiglu_forward(a.act.data(), a.gate.data(), a.up.data(), N * I);
  return linear(a.act, w.down, {}, N, I, H);
}

// Σ_j w[n,j]·FFN_{idx[n,j]}(ffn_in[n]) with the top-k of softmax(ffn_in·routerᵀ), renormalised.
template <class T>
std::vector<T> Transformer<T>::moe_ffn(const LayerWeights<T>& w, LayerActivations<T>& a) const {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, N = int64_t(a.h.size()) / H;
  const int64_t E = c.num_local_experts, k = c.num_experts_per_tok;
  rmsnorm(a.ffn_in, a.ffn_rstd, a.h, w.ffn_norm, N, H, c.rms_norm_eps);
  a.router_logits = linear(a.ffn_in, w.router, {}, N, H, E);  // [N,E]
  a.probs.resize(size_t(N * E));
  a.idx.resize(size_t(N * k));
  a.w.resize(size_t(N * k));
  ops::router_forward(a.idx.data(), a.w.data(), a.probs.data(), a.router_logits.data(), N, E, k);
  std::vector<T> out(size_t(N * H));
  const ExpertPointers<T> experts(w);
  ops::moe_forward(out.data(), a.moe, a.ffn_in.data(), a.idx.data(), a.w.data(), experts.weights(), moe_shape(N));
  return out;
}

template <class T>
ops::MoeShape Transformer<T>::moe_shape(int64_t N) const {
  const ModelConfig& c = config_;
  return {N, c.hidden_size, c.expert_intermediate_size(), c.num_local_experts, c.num_experts_per_tok};
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace upcycle
