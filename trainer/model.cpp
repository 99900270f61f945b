// The forward pass: embedding, then per layer attention and FFN (dense SwiGLU or routed
// experts) each behind an rmsnorm and added to the residual stream, then the final norm and the
// language-model head.
#include "trainer/model.hpp"

#include <stdexcept>

#include "trainer/ops/attention.hpp"
#include "trainer/ops/embedding.hpp"
#include "trainer/ops/matmul.hpp"
#include "trainer/ops/rmsnorm.hpp"
#include "trainer/ops/router.hpp"
#include "trainer/ops/swiglu.hpp"

namespace upcycle {

namespace {

const float* or_null(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

// out[N,O] = in[N,I]·W[O,I]ᵀ + bias[O]
std::vector<float> linear(const std::vector<float>& in, const std::vector<float>& W, const std::vector<float>& bias,
                          int64_t N, int64_t I, int64_t O) {
  std::vector<float> out(size_t(N * O));
  ops::matmul_forward(out.data(), in.data(), W.data(), or_null(bias), N, I, O);
  return out;
}

// a += b, elementwise
void add_into(std::vector<float>& a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
}

// out[N,C] = rmsnorm(in[N,C]) ⊙ weight, rstd[N]
void rmsnorm(std::vector<float>& out, std::vector<float>& rstd, const std::vector<float>& in,
             const std::vector<float>& weight, int64_t N, int64_t C, double eps) {
  out.resize(size_t(N * C));
  rstd.resize(size_t(N));
  ops::rmsnorm_forward(out.data(), rstd.data(), in.data(), weight.data(), N, C, eps);
}

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

Model::Model(const Checkpoint& ckpt)
    : config_(ckpt.config()),
      weights_(load_weights(ckpt)),
      rope_(config_.head_dim, config_.max_position_embeddings, config_.rope_theta,
            rope_scaling(config_, ckpt.path())) {}

std::vector<float> Model::forward(const Batch& batch) const {
  Activations acts;
  return forward(batch, acts);
}

std::vector<float> Model::forward(const Batch& batch, Activations& acts) const {
  check_batch(batch);
  const ModelConfig& c = config_;
  const int64_t N = int64_t(batch.ids.size()), H = c.hidden_size, V = c.vocab_size;
  std::vector<float> x(size_t(N * H));  // [N,H]
  ops::embedding_forward(x.data(), weights_.embedding.data(), batch.ids.data(), N, H, V);
  acts.layers.resize(weights_.layers.size());
  for (size_t l = 0; l < weights_.layers.size(); ++l) {
    const LayerWeights& w = weights_.layers[l];
    LayerActivations& a = acts.layers[l];
    a.x = std::move(x);
    attention_block(w, a, batch);
    x = a.h;
    add_into(x, c.is_moe() ? moe_ffn(w, a) : dense_ffn(w, a));
  }
  acts.x = std::move(x);
  rmsnorm(acts.final_out, acts.final_rstd, acts.x, weights_.final_norm, N, H, c.rms_norm_eps);
  const auto& head = weights_.lm_head.empty() ? weights_.embedding : weights_.lm_head;
  return linear(acts.final_out, head, {}, N, H, V);  // [N,V]
}

// h = x + attention(rope(q), rope(k), v)·oᵀ with q, k, v projections of rmsnorm(x).
void Model::attention_block(const LayerWeights& w, LayerActivations& a, const Batch& batch) const {
  const ModelConfig& c = config_;
  const int64_t N = int64_t(batch.ids.size()), H = c.hidden_size;
  rmsnorm(a.attn_in, a.attn_rstd, a.x, w.attn_norm, N, H, c.rms_norm_eps);
  a.q = linear(a.attn_in, w.q, w.q_bias, N, H, c.q_dim());   // [N,nH·D]
  a.k = linear(a.attn_in, w.k, w.k_bias, N, H, c.kv_dim());  // [N,nKV·D]
  a.v = linear(a.attn_in, w.v, w.v_bias, N, H, c.kv_dim());  // [N,nKV·D]
  ops::rope_forward(a.q.data(), a.q.data(), batch.positions.data(), rope_, N, c.num_attention_heads);
  ops::rope_forward(a.k.data(), a.k.data(), batch.positions.data(), rope_, N, c.num_key_value_heads);

  ops::AttentionShape shape;
  shape.tokens = N;
  shape.heads = c.num_attention_heads;
  shape.kv_heads = c.num_key_value_heads;
  shape.head_dim = c.head_dim;
  shape.window = c.sliding_window.value_or(0);
  a.attn.resize(a.q.size());
  a.lse.resize(size_t(N * c.num_attention_heads));
  ops::attention_forward(a.attn.data(), a.lse.data(), a.q.data(), a.k.data(), a.v.data(), batch.cu_seqlens.data(),
                         int64_t(batch.cu_seqlens.size()) - 1, shape);
  a.h = a.x;
  add_into(a.h, linear(a.attn, w.o, {}, N, c.q_dim(), H));
}

// (silu(ffn_in·gateᵀ) ⊙ ffn_in·upᵀ)·downᵀ   [N,H], ffn_in = rmsnorm(h)
std::vector<float> Model::dense_ffn(const LayerWeights& w, LayerActivations& a) const {
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
std::vector<float> Model::moe_ffn(const LayerWeights& w, LayerActivations& a) const {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, N = int64_t(a.h.size()) / H;
  const int64_t E = c.num_local_experts, k = c.num_experts_per_tok;
  rmsnorm(a.ffn_in, a.ffn_rstd, a.h, w.ffn_norm, N, H, c.rms_norm_eps);
  a.router_logits = linear(a.ffn_in, w.router, {}, N, H, E);  // [N,E]
  a.probs.resize(size_t(N * E));
  a.idx.resize(size_t(N * k));
  a.w.resize(size_t(N * k));
  ops::router_forward(a.idx.data(), a.w.data(), a.probs.data(), a.router_logits.data(), N, E, k);

  std::vector<const float*> gate, up, down;
  for (int64_t e = 0; e < E; ++e) {
    gate.push_back(w.expert_gate[size_t(e)].data());
    up.push_back(w.expert_up[size_t(e)].data());
    down.push_back(w.expert_down[size_t(e)].data());
  }
  const ops::MoeShape shape{N, H, c.expert_intermediate_size(), E, k};
  std::vector<float> out(size_t(N * H));
  ops::moe_forward(out.data(), a.moe, a.ffn_in.data(), a.idx.data(), a.w.data(),
                   ops::ExpertWeights<float>{gate.data(), up.data(), down.data()}, shape);
  return out;
}

}  // namespace upcycle
