// The forward pass, for any backend: embedding, then per layer attention and FFN (dense SwiGLU
// or routed experts) each behind an rmsnorm and added to the residual stream, then the final
// norm and the language-model head. Template definitions, included by the files that
// instantiate the model (trainer/model.cpp for the CPU, cuda/model.cpp for the GPU).
#pragma once
#include <algorithm>
#include <stdexcept>

#include "trainer/model.hpp"
#include "trainer/model_math.hpp"

namespace upcycle {

namespace model_detail {

// The batch's ids and positions are checked on the host: the GPU's ops cannot report a bad id.
inline void check_batch(const Batch& b, int64_t vocab, int64_t max_positions) {
  if (b.positions.size() != b.ids.size()) throw std::invalid_argument("forward: ids and positions differ in length");
  if (b.cu_seqlens.size() < 2) throw std::invalid_argument("forward: cu_seqlens needs at least two offsets");
  if (b.cu_seqlens.front() != 0 || b.cu_seqlens.back() != int32_t(b.ids.size()) ||
      !std::is_sorted(b.cu_seqlens.begin(), b.cu_seqlens.end()))
    throw std::invalid_argument("forward: cu_seqlens must rise from 0 to the number of tokens");
  for (int32_t id : b.ids)
    if (id < 0 || id >= vocab) throw std::invalid_argument("forward: token id " + std::to_string(id) + " outside the vocabulary");
  for (int32_t p : b.positions)
    if (p < 0 || p >= max_positions) throw std::invalid_argument("forward: position " + std::to_string(p) + " outside the rope table");
}

inline int64_t longest(const std::vector<int32_t>& cu_seqlens) {
  int64_t m = 0;
  for (size_t s = 1; s < cu_seqlens.size(); ++s) m = std::max<int64_t>(m, cu_seqlens[s] - cu_seqlens[s - 1]);
  return m;
}

}  // namespace model_detail

template <class B>
BasicTransformer<B>::BasicTransformer(const Checkpoint& ckpt)
    : BasicTransformer(ckpt.config(), B::load(ckpt), ckpt.path()) {}

template <class B>
BasicTransformer<B>::BasicTransformer(ModelConfig config, WeightSet weights, const std::filesystem::path& source)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      rope_(B::rope_table(config_.head_dim, config_.max_position_embeddings, config_.rope_theta,
                          rope_scaling(config_, source))) {}

template <class B>
auto BasicTransformer<B>::forward(const Batch& batch) const -> Vec<Act> {
  Acts acts;
  forward_hidden(batch, acts, {}, Keep::Routing);
  const int64_t N = int64_t(batch.ids.size());
  return linear(acts.final_out, head(), {}, N, config_.hidden_size, config_.vocab_size);  // [N,V]
}

template <class B>
auto BasicTransformer<B>::ffn_inputs(const Batch& batch) const -> std::vector<Vec<Act>> {
  Acts acts;
  forward_hidden(batch, acts, {}, Keep::FfnInputAndRouting);
  std::vector<Vec<Act>> out;
  for (auto& layer : acts.layers) out.push_back(std::move(layer.ffn_in));
  return out;
}

template <class B>
void BasicTransformer<B>::forward_hidden(const Batch& batch, Acts& acts, const std::vector<std::vector<float>>& selection_bias,
                                         Keep keep) const {
  const ModelConfig& c = config_;
  model_detail::check_batch(batch, c.vocab_size, rope_.max_positions);
  const int64_t N = int64_t(batch.ids.size()), H = c.hidden_size, V = c.vocab_size;
  acts.ids = B::upload(batch.ids);
  acts.positions = B::upload(batch.positions);
  acts.cu_seqlens = B::upload(batch.cu_seqlens);
  acts.max_seqlen = model_detail::longest(batch.cu_seqlens);
  Vec<Act> x(size_t(N * H));  // [N,H]
  B::embedding_lookup(x.data(), weights_.embedding, acts.ids.data(), N, H, V);
  acts.selection_bias = selection_bias.empty() ? nullptr : &selection_bias;
  acts.layers.resize(weights_.layers.size());
  for (size_t l = 0; l < weights_.layers.size(); ++l) {
    const Layer& w = weights_.layers[l];
    LayerActs& a = acts.layers[l];
    a.x = std::move(x);
    attention_block(w, a, acts);
    x = c.is_moe() ? moe_ffn(w, a, selection_bias.empty() ? nullptr : &selection_bias[l]) : dense_ffn(w, a);
    B::add_into(x.data(), a.h.data(), N * H);
    if (keep != Keep::All) {
      LayerActs kept;
      if (keep == Keep::InputAndRouting) kept.x = std::move(a.x);
      if (keep == Keep::FfnInputAndRouting) kept.ffn_in = std::move(a.ffn_in);
      kept.router_logits = std::move(a.router_logits);
      kept.probs = std::move(a.probs);
      kept.idx = std::move(a.idx);
      a = std::move(kept);
    }
  }
  acts.x = std::move(x);
  rmsnorm(acts.final_out, acts.final_rstd, acts.x, weights_.final_norm, N);
}

template <class B>
void BasicTransformer<B>::layer_again(size_t l, LayerActs& a, const Acts& acts) const {
  const Layer& w = weights_.layers[l];
  LayerActs full;
  full.x = std::move(a.x);
  attention_block(w, full, acts);
  if (config_.is_moe()) moe_ffn(w, full, acts.selection_bias ? &(*acts.selection_bias)[l] : nullptr);
  else dense_ffn(w, full);
  a = std::move(full);
}

template <class B>
auto BasicTransformer<B>::linear(const Vec<Act>& in, const Weight& W, const Weight& bias, int64_t N, int64_t I,
                                 int64_t O) const -> Vec<Act> {
  Vec<Act> out(size_t(N * O));
  B::linear_forward(out.data(), in.data(), W, or_null(bias), N, I, O);
  return out;
}

template <class B>
void BasicTransformer<B>::head_norm(Vec<Act>& x, Vec<Act>& raw, Vec<Stat>& rstd, const Weight& weight,
                                    int64_t rows) const {
  raw = std::move(x);
  x = Vec<Act>(raw.size());
  rstd = Vec<Stat>(size_t(rows));
  B::rmsnorm_forward(x.data(), rstd.data(), raw.data(), weight.data(), rows, config_.head_dim, config_.rms_norm_eps);
}

template <class B>
void BasicTransformer<B>::rmsnorm(Vec<Act>& out, Vec<Stat>& rstd, const Vec<Act>& in, const Weight& weight,
                                  int64_t N) const {
  const int64_t C = config_.hidden_size;
  out = Vec<Act>(size_t(N * C));
  rstd = Vec<Stat>(size_t(N));
  B::rmsnorm_forward(out.data(), rstd.data(), in.data(), weight.data(), N, C, config_.rms_norm_eps);
}

template <class B>
ops::AttentionShape BasicTransformer<B>::attention_shape(int64_t N) const {
  ops::AttentionShape shape;
  shape.tokens = N;
  shape.heads = config_.num_attention_heads;
  shape.kv_heads = config_.num_key_value_heads;
  shape.head_dim = config_.head_dim;
  shape.window = config_.sliding_window.value_or(0);
  return shape;
}

// h = x + attention(rope(q), rope(k), v)·oᵀ with q, k, v projections of rmsnorm(x).
template <class B>
void BasicTransformer<B>::attention_block(const Layer& w, LayerActs& a, const Acts& acts) const {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, N = int64_t(a.x.size()) / H;
  rmsnorm(a.attn_in, a.attn_rstd, a.x, w.attn_norm, N);
  a.q = linear(a.attn_in, w.q, w.q_bias, N, H, c.q_dim());   // [N,nH·D]
  a.k = linear(a.attn_in, w.k, w.k_bias, N, H, c.kv_dim());  // [N,nKV·D]
  a.v = linear(a.attn_in, w.v, w.v_bias, N, H, c.kv_dim());  // [N,nKV·D]
  if (c.qk_norm()) {
    head_norm(a.q, a.q_raw, a.q_rstd, w.q_norm, N * c.num_attention_heads);
    head_norm(a.k, a.k_raw, a.k_rstd, w.k_norm, N * c.num_key_value_heads);
  }
  B::rope_forward(a.q.data(), a.q.data(), acts.positions.data(), rope_, N, c.num_attention_heads);
  B::rope_forward(a.k.data(), a.k.data(), acts.positions.data(), rope_, N, c.num_key_value_heads);
  a.attn = Vec<Act>(a.q.size());
  a.lse = Vec<Stat>(size_t(N * c.num_attention_heads));
  B::attention_forward(a.attn.data(), a.lse.data(), a.q.data(), a.k.data(), a.v.data(), acts.cu_seqlens.data(),
                       int64_t(acts.cu_seqlens.size()) - 1, acts.max_seqlen, attention_shape(N));
  a.h = linear(a.attn, w.o, {}, N, c.q_dim(), H);
  B::add_into(a.h.data(), a.x.data(), N * H);
}

template <class B>
auto BasicTransformer<B>::swiglu(const Vec<Act>& in, const Weight& gate, const Weight& up, const Weight& down, int64_t I,
                                 Vec<Act>& g, Vec<Act>& u, Vec<Act>& act) const -> Vec<Act> {
  const int64_t H = config_.hidden_size, N = int64_t(in.size()) / H;
  g = linear(in, gate, {}, N, H, I);
  u = linear(in, up, {}, N, H, I);
  act = Vec<Act>(g.size());
  B::swiglu_forward(act.data(), g.data(), u.data(), N * I);
  return linear(act, down, {}, N, I, H);
}

// The SwiGLU FFN of ffn_in = rmsnorm(h)   [N,H]
template <class B>
auto BasicTransformer<B>::dense_ffn(const Layer& w, LayerActs& a) const -> Vec<Act> {
  const int64_t N = int64_t(a.h.size()) / config_.hidden_size;
  rmsnorm(a.ffn_in, a.ffn_rstd, a.h, w.ffn_norm, N);
  return swiglu(a.ffn_in, w.gate, w.up, w.down, config_.intermediate_size, a.gate, a.up, a.act);
}

// Σ_j w[n,j]·FFN_{idx[n,j]}(ffn_in[n]) with the top-k of softmax(ffn_in·routerᵀ) (renormalised
// when the config says so), plus qwen2_moe's gated shared expert.
template <class B>
auto BasicTransformer<B>::moe_ffn(const Layer& w, LayerActs& a, const std::vector<float>* selection_bias) const
    -> Vec<Act> {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, N = int64_t(a.h.size()) / H;
  const int64_t E = c.num_local_experts, k = c.num_experts_per_tok;
  rmsnorm(a.ffn_in, a.ffn_rstd, a.h, w.ffn_norm, N);
  a.router_logits = Vec<Stat>(size_t(N * E));  // [N,E]
  B::router_logits(a.router_logits.data(), a.ffn_in.data(), w.router.data(), nullptr, N, H, E);
  a.probs = Vec<Stat>(size_t(N * E));
  a.idx = Vec<int32_t>(size_t(N * k));
  a.w = Vec<Stat>(size_t(N * k));
  const Vec<Stat> bias = selection_bias ? B::upload(std::vector<Stat>(selection_bias->begin(), selection_bias->end()))
                                        : Vec<Stat>();  // [E]
  B::router_forward(a.idx.data(), a.w.data(), a.probs.data(), a.router_logits.data(),
                    selection_bias ? bias.data() : nullptr, N, E, k, c.norm_topk_prob);
  Vec<Act> out(size_t(N * H));
  const typename B::Experts experts(w);
  B::moe_forward(out.data(), a.moe, a.ffn_in.data(), a.idx.data(), a.w.data(), experts.weights(), moe_shape(N));
  if (c.has_shared_expert()) shared_expert(w, a, out);
  return out;
}

template <class B>
void BasicTransformer<B>::shared_expert(const Layer& w, LayerActs& a, Vec<Act>& out) const {
  const int64_t H = config_.hidden_size, N = int64_t(a.ffn_in.size()) / H;
  a.shared_y = swiglu(a.ffn_in, w.shared_gate, w.shared_up, w.shared_down, config_.shared_expert_intermediate_size,
                      a.shared_gate, a.shared_up, a.shared_act);
  a.shared_logit = Vec<Stat>(size_t(N));  // [N,1]
  B::router_logits(a.shared_logit.data(), a.ffn_in.data(), w.shared_router.data(), nullptr, N, H, 1);
  B::sigmoid_gate_forward(out.data(), a.shared_y.data(), a.shared_logit.data(), N, H);
}

template <class B>
ops::MoeShape BasicTransformer<B>::moe_shape(int64_t N) const {
  const ModelConfig& c = config_;
  return {N, c.hidden_size, c.expert_intermediate_size(), c.num_local_experts, c.num_experts_per_tok};
}

}  // namespace upcycle
