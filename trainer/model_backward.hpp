// The training objective and its backward, for any backend: the LM head and cross-entropy in
// chunks of rows, the router's auxiliary losses (and UpIT's pre-optimisation BCE) over all
// layers at once, then the layers in reverse, each op's backward in the mirror order of the
// forward. Template definitions, included where the model is instantiated.
#pragma once
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "trainer/model.hpp"
#include "trainer/model_math.hpp"

namespace upcycle {

namespace model_detail {

// Rows of logits held at once: about 32 MB of them.
inline int64_t head_chunk_rows(int64_t V, size_t elem) {
  return std::max<int64_t>(1, int64_t(32u << 20) / (V * int64_t(elem)));
}

inline int64_t counted(const std::vector<int32_t>& targets) {
  return std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t != ops::kIgnoreIndex; });
}

// Σ over rows of −Σ_e p·log p for probs [rows, E] (0·log 0 = 0): the routers' entropy, telemetry.
template <class T>
double entropy_sum(const std::vector<T>& probs) {
  double sum = 0;
  for (const T p : probs)
    if (p > 0) sum -= double(p) * std::log(double(p));
  return sum;
}

}  // namespace model_detail

template <class B>
LossReport BasicTransformer<B>::loss(const Batch& batch, const std::vector<int32_t>& targets,
                                     const LossOptions& opts) const {
  check_loss_options(batch, opts);
  Acts acts;
  forward_hidden(batch, acts, opts.selection_bias, Keep::Routing);
  LossReport report;
  head_loss(acts.final_out, targets, opts.normaliser, opts.ce_coef, report, nullptr, nullptr,
            opts.per_sequence ? &batch.cu_seqlens : nullptr);
  router_losses(acts, opts, report, nullptr, &targets);
  return report;
}

template <class B>
LossReport BasicTransformer<B>::loss_and_grad(const Batch& batch, const std::vector<int32_t>& targets,
                                              GradSet& grads, const LossOptions& opts) const {
  const ModelConfig& c = config_;
  const int64_t N = int64_t(batch.ids.size()), H = c.hidden_size;
  check_loss_options(batch, opts);
  Acts acts;
  forward_hidden(batch, acts, opts.selection_bias, opts.recompute ? Keep::InputAndRouting : Keep::All);
  LossReport report;
  Vec<Act> d_final = B::template zeros<Act>(size_t(N * H));  // [N,H]
  Grad* d_head = or_null(weights_.lm_head.empty() ? grads.embedding : grads.lm_head);
  head_loss(acts.final_out, targets, opts.normaliser, opts.ce_coef, report, d_final.data(), d_head);

  std::vector<Vec<Stat>> d_router(weights_.layers.size());  // L × [N,E]
  if (c.is_moe())
    for (auto& d : d_router) d = B::template zeros<Stat>(size_t(N * c.num_local_experts));
  router_losses(acts, opts, report, &d_router);

  Vec<Act> d_x = B::template zeros<Act>(size_t(N * H));  // [N,H] gradient of the last residual
  B::rmsnorm_backward(d_x.data(), or_null(grads.final_norm), d_final.data(), acts.x.data(),
                      weights_.final_norm.data(), acts.final_rstd.data(), N, H);
  backward(acts, d_x, d_router, grads);
  return report;
}

template <class B>
void BasicTransformer<B>::check_loss_options(const Batch& batch, const LossOptions& opts) const {
  if (!opts.selection_bias.empty()) {
    if (!config_.is_moe()) throw std::invalid_argument("loss: a selection bias given for a dense model");
    bool shaped = opts.selection_bias.size() == weights_.layers.size();
    for (const auto& b : opts.selection_bias) shaped = shaped && int64_t(b.size()) == config_.num_local_experts;
    if (!shaped) throw std::invalid_argument("loss: the selection bias is not [layers][experts]");
  }
  if (!opts.balance_counts.empty()) {
    bool shaped = config_.is_moe() && opts.balance_counts.size() == weights_.layers.size() && opts.balance_tokens > 0;
    for (const auto& c : opts.balance_counts) shaped = shaped && int64_t(c.size()) == config_.num_local_experts;
    if (!shaped) throw std::invalid_argument("loss: the global-batch counts are not [layers][experts] with tokens > 0");
  }
  if (opts.router_targets.empty()) return;
  if (!config_.is_moe()) throw std::invalid_argument("loss: router targets given for a dense model");
  if (opts.router_targets.size() != batch.ids.size())
    throw std::invalid_argument("loss: router targets and tokens differ in number");
  for (int32_t t : opts.router_targets)
    if (t < -1 || t >= config_.num_local_experts)
      throw std::invalid_argument("loss: router target outside [-1, experts)");
}

template <class B>
void BasicTransformer<B>::head_loss(const Vec<Act>& hidden, const std::vector<int32_t>& targets, int64_t normaliser,
                                    double ce_coef, LossReport& report, Act* d_hidden, Grad* d_head,
                                    const std::vector<int32_t>* sequences) const {
  const int64_t N = int64_t(targets.size()), H = config_.hidden_size, V = config_.vocab_size;
  if (int64_t(hidden.size()) != N * H) throw std::invalid_argument("loss: targets and tokens differ in number");
  for (int32_t t : targets)
    if (t != ops::kIgnoreIndex && (t < 0 || t >= V)) throw std::invalid_argument("loss: target outside the vocabulary");
  const int64_t count = normaliser > 0 ? normaliser : model_detail::counted(targets);
  const int64_t chunk = model_detail::head_chunk_rows(V, sizeof(Act));
  const Vec<int32_t> all_targets = B::upload(targets);
  Vec<Act> logits(size_t(std::min(N, chunk) * V));
  Vec<Stat> lse(size_t(std::min(N, chunk)));
  size_t seq = 0;  // the sequence row r0 lies in (with `sequences`)
  if (sequences) {
    report.sequence_ce_sum.assign(sequences->size() - 1, 0.0);
    report.sequence_tokens.assign(sequences->size() - 1, 0);
  }
  for (int64_t r0 = 0, R = 0; r0 < N; r0 += R) {
    if (sequences)
      while ((*sequences)[seq + 1] <= r0) ++seq;
    R = std::min(chunk, (sequences ? int64_t((*sequences)[seq + 1]) : N) - r0);
    const Act* x = hidden.data() + r0 * H;
    const int32_t* t = all_targets.data() + r0;
    B::linear_forward(logits.data(), x, head(), nullptr, R, H, V);  // [R,V]
    const ops::CrossEntropyLoss ce = B::cross_entropy_forward(lse.data(), logits.data(), t, R, V);
    report.ce_sum += ce.mean * double(ce.count);
    report.tokens += ce.count;
    if (sequences) {
      report.sequence_ce_sum[seq] += ce.mean * double(ce.count);
      report.sequence_tokens[seq] += ce.count;
    }
    if (!d_hidden || ce.count == 0 || ce_coef == 0) continue;
    B::cross_entropy_backward(logits.data(), logits.data(), lse.data(), t, R, V, count, ce_coef);
    B::linear_backward(d_hidden + r0 * H, d_head, nullptr, logits.data(), x, head(), R, H, V);
  }
}

template <class B>
void BasicTransformer<B>::router_losses(const Acts& acts, const LossOptions& opts, LossReport& report,
                                        std::vector<Vec<Stat>>* d_logits,
                                        const std::vector<int32_t>* counted_targets) const {
  const ModelConfig& c = config_;
  if (!c.is_moe()) return;
  const int64_t E = c.num_local_experts, k = c.num_experts_per_tok, L = int64_t(acts.layers.size());
  const int64_t N = int64_t(acts.ids.size()), NE = N * E, Nk = N * k;
  // Every layer's rows stacked: [L·N, E] and [L·N, k].
  Vec<Stat> probs(size_t(L * NE)), logits(size_t(L * NE));
  Vec<int32_t> idx(size_t(L * Nk));
  for (int64_t l = 0; l < L; ++l) {
    const LayerActs& a = acts.layers[size_t(l)];
    B::copy(probs.data() + l * NE, a.probs.data(), NE);
    B::copy(logits.data() + l * NE, a.router_logits.data(), NE);
    B::copy(idx.data() + l * Nk, a.idx.data(), Nk);
    auto& tokens = report.expert_tokens.emplace_back(size_t(E), 0);
    const std::vector<int32_t> host_idx = B::download(a.idx);  // [N,k]
    for (int32_t e : host_idx) ++tokens[size_t(e)];
    if (counted_targets) {
      auto& counted = report.counted_expert_tokens.emplace_back(size_t(E), 0);
      for (int64_t n = 0; n < N; ++n)
        if ((*counted_targets)[size_t(n)] != ops::kIgnoreIndex)
          for (int64_t j = 0; j < k; ++j) ++counted[size_t(host_idx[size_t(n * k + j)])];
    }
    report.router_entropy.push_back(model_detail::entropy_sum(B::download(a.probs)));
  }
  report.routed = N;
  const int64_t rows = L * N;
  // The router BCE's targets, the batch's repeated for every layer: [L·N].
  std::vector<int32_t> host_targets;
  for (int64_t l = 0; l < L && !opts.router_targets.empty(); ++l)
    host_targets.insert(host_targets.end(), opts.router_targets.begin(), opts.router_targets.end());
  const Vec<int32_t> bce_targets = B::upload(host_targets);
  const double lb_coef = opts.load_balancing ? c.router_aux_loss_coef : 0.0;
  // Per layer: each layer's loss on its own N rows with coef / L, so their sum is the mean over
  // layers; global-batch the same with f from the whole step's counts. Global: all L·N rows at once.
  const bool per_layer = opts.aux_loss != AuxLoss::Global;
  const int64_t lb_parts = per_layer ? L : 1, lb_rows = per_layer ? N : rows;
  const bool step_counts = opts.aux_loss == AuxLoss::GlobalBatch && !opts.balance_counts.empty();
  auto counts = [&](int64_t p) { return step_counts ? opts.balance_counts[size_t(p)].data() : nullptr; };
  const int64_t counted = step_counts ? opts.balance_tokens : 0;
  report.aux = 0;
  for (int64_t p = 0; p < lb_parts; ++p)
    report.aux += B::load_balancing_loss_forward(probs.data() + p * NE, idx.data() + p * Nk, lb_rows, E, k,
                                                 lb_coef / double(lb_parts), counts(p), counted);
  if (opts.z_loss_coef > 0) report.z = B::router_z_loss_forward(logits.data(), rows, E, opts.z_loss_coef);
  if (!host_targets.empty())
    report.router_bce = B::router_bce_loss_forward(logits.data(), bce_targets.data(), rows, E, opts.router_bce_coef);
  if (!d_logits) return;
  Vec<Stat> d = B::template zeros<Stat>(size_t(L * NE));
  for (int64_t p = 0; p < lb_parts; ++p)
    B::load_balancing_loss_backward(d.data() + p * NE, probs.data() + p * NE, idx.data() + p * Nk, lb_rows, E, k,
                                    lb_coef / double(lb_parts), opts.aux_scale, counts(p), counted);
  if (opts.z_loss_coef > 0)
    B::router_z_loss_backward(d.data(), logits.data(), rows, E, opts.z_loss_coef, opts.aux_scale);
  if (!host_targets.empty())
    B::router_bce_loss_backward(d.data(), logits.data(), bce_targets.data(), rows, E, opts.router_bce_coef,
                                opts.aux_scale);
  for (int64_t l = 0; l < L; ++l) B::copy((*d_logits)[size_t(l)].data(), d.data() + l * NE, NE);
}

// d_x [N,H] holds the gradient of the last residual; the layers run in reverse, each adding
// its FFN's and then its attention's contribution to the residual's gradient.
template <class B>
void BasicTransformer<B>::backward(Acts& acts, Vec<Act>& d_x, std::vector<Vec<Stat>>& d_router_logits,
                                   GradSet& grads) const {
  const ModelConfig& c = config_;
  const int64_t N = int64_t(acts.ids.size()), H = c.hidden_size;
  Vec<Act> d_h(size_t(N * H));
  for (size_t l = weights_.layers.size(); l-- > 0;) {
    if (acts.layers[l].h.empty()) layer_again(l, acts.layers[l], acts);  // kept its input alone
    B::copy(d_h.data(), d_x.data(), N * H);  // x_out = h + ffn(rmsnorm(h))
    ffn_backward(weights_.layers[l], acts.layers[l], d_x, d_h, d_router_logits[l], grads.layers[l]);
    B::copy(d_x.data(), d_h.data(), N * H);  // h = x + attention(rmsnorm(x))
    attention_backward(weights_.layers[l], acts.layers[l], acts, d_h, d_x, grads.layers[l]);
    acts.layers[l] = {};  // done with it: give the memory back
  }
  if (!grads.embedding.empty())
    B::embedding_backward(grads.embedding.data(), d_x.data(), acts.ids.data(), N, H, c.vocab_size);
}

// d_out [N,H] is the gradient of the FFN's output; adds the gradient of its input h into d_h.
template <class B>
void BasicTransformer<B>::ffn_backward(const Layer& w, LayerActs& a, const Vec<Act>& d_out, Vec<Act>& d_h,
                                       Vec<Stat>& d_router_logits, LayerGrads& g) const {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, N = int64_t(a.h.size()) / H;
  Vec<Act> d_in = B::template zeros<Act>(size_t(N * H));  // [N,H] gradient of ffn_in
  if (c.is_moe()) {
    const int64_t E = c.num_local_experts, k = c.num_experts_per_tok;
    Vec<Stat> d_w = B::template zeros<Stat>(size_t(N * k));  // [N,k]
    B::moe_backward(d_in.data(), d_w.data(), ExpertGradPointers<Grad>(g).grads(), d_out.data(), a.w.data(),
                    typename B::Experts(w).weights(), a.moe, moe_shape(N));
    B::router_backward(d_router_logits.data(), d_w.data(), a.w.data(), a.probs.data(), a.idx.data(), N, E, k,
                       c.norm_topk_prob);
    B::router_logits_backward(d_in.data(), or_null(g.router), d_router_logits.data(), a.ffn_in.data(),
                              w.router.data(), N, H, E);
    if (c.has_shared_expert()) {
      Vec<Act> d_y(size_t(N * H));    // [N,H] the gradient of the shared expert's output
      Vec<Stat> d_logit(static_cast<size_t>(N));  // [N,1] and of its gate's logit
      B::sigmoid_gate_backward(d_y.data(), d_logit.data(), d_out.data(), a.shared_y.data(), a.shared_logit.data(), N,
                               H);
      B::router_logits_backward(d_in.data(), or_null(g.shared_router), d_logit.data(), a.ffn_in.data(),
                                w.shared_router.data(), N, H, 1);
      swiglu_backward(d_in, d_y, a.ffn_in, a.shared_gate, a.shared_up, a.shared_act, w.shared_gate, w.shared_up,
                      w.shared_down, g.shared_gate, g.shared_up, g.shared_down, c.shared_expert_intermediate_size);
    }
  } else {
    swiglu_backward(d_in, d_out, a.ffn_in, a.gate, a.up, a.act, w.gate, w.up, w.down, g.gate, g.up, g.down,
                    c.intermediate_size);
  }
  B::rmsnorm_backward(d_h.data(), or_null(g.ffn_norm), d_in.data(), a.h.data(), w.ffn_norm.data(),
                      a.ffn_rstd.data(), N, H);
}

template <class B>
void BasicTransformer<B>::swiglu_backward(Vec<Act>& d_in, const Vec<Act>& d_out, const Vec<Act>& in, const Vec<Act>& g,
                                          const Vec<Act>& u, const Vec<Act>& act, const Weight& gate, const Weight& up,
                                          const Weight& down, typename B::GradTensor& d_gate_w,
                                          typename B::GradTensor& d_up_w, typename B::GradTensor& d_down_w,
                                          int64_t I) const {
  const int64_t H = config_.hidden_size, N = int64_t(in.size()) / H;
  Vec<Act> d_act = B::template zeros<Act>(size_t(N * I)), d_gate = B::template zeros<Act>(size_t(N * I)),
           d_up = B::template zeros<Act>(size_t(N * I));  // [N,I]
  B::linear_backward(d_act.data(), or_null(d_down_w), nullptr, d_out.data(), act.data(), down, N, I, H);
  B::swiglu_backward(d_gate.data(), d_up.data(), d_act.data(), g.data(), u.data(), N * I);
  B::linear_backward(d_in.data(), or_null(d_gate_w), nullptr, d_gate.data(), in.data(), gate, N, H, I);
  B::linear_backward(d_in.data(), or_null(d_up_w), nullptr, d_up.data(), in.data(), up, N, H, I);
}

template <class B>
auto BasicTransformer<B>::head_norm_backward(const Vec<Act>& d_x, const Vec<Act>& raw, const Vec<Stat>& rstd,
                                             const Weight& weight, typename B::GradTensor& d_weight,
                                             int64_t rows) const -> Vec<Act> {
  Vec<Act> d_raw = B::template zeros<Act>(raw.size());
  B::rmsnorm_backward(d_raw.data(), or_null(d_weight), d_x.data(), raw.data(), weight.data(), rstd.data(), rows,
                      config_.head_dim);
  return d_raw;
}

// d_out [N,H] is the gradient of the attention block's output; adds the gradient of its input
// x into d_x.
template <class B>
void BasicTransformer<B>::attention_backward(const Layer& w, const LayerActs& a, const Acts& acts,
                                             const Vec<Act>& d_out, Vec<Act>& d_x, LayerGrads& g) const {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, N = int64_t(a.x.size()) / H, QD = c.q_dim(), KD = c.kv_dim();
  Vec<Act> d_attn = B::template zeros<Act>(size_t(N * QD));  // [N,nH·D]
  B::linear_backward(d_attn.data(), or_null(g.o), nullptr, d_out.data(), a.attn.data(), w.o, N, QD, H);
  Vec<Act> d_q = B::template zeros<Act>(size_t(N * QD)), d_k = B::template zeros<Act>(size_t(N * KD)),
           d_v = B::template zeros<Act>(size_t(N * KD));
  B::attention_backward(d_q.data(), d_k.data(), d_v.data(), d_attn.data(), a.q.data(), a.k.data(), a.v.data(),
                        a.attn.data(), a.lse.data(), acts.cu_seqlens.data(), int64_t(acts.cu_seqlens.size()) - 1,
                        acts.max_seqlen, attention_shape(N));
  // Undo the rotation: the gradients of q and k before rope.
  Vec<Act> d_q0 = B::template zeros<Act>(d_q.size()), d_k0 = B::template zeros<Act>(d_k.size());
  B::rope_backward(d_q0.data(), d_q.data(), acts.positions.data(), rope_, N, c.num_attention_heads);
  B::rope_backward(d_k0.data(), d_k.data(), acts.positions.data(), rope_, N, c.num_key_value_heads);
  if (c.qk_norm()) {
    d_q0 = head_norm_backward(d_q0, a.q_raw, a.q_rstd, w.q_norm, g.q_norm, N * c.num_attention_heads);
    d_k0 = head_norm_backward(d_k0, a.k_raw, a.k_rstd, w.k_norm, g.k_norm, N * c.num_key_value_heads);
  }
  Vec<Act> d_in = B::template zeros<Act>(size_t(N * H));  // [N,H] gradient of attn_in
  B::linear_backward(d_in.data(), or_null(g.q), or_null(g.q_bias), d_q0.data(), a.attn_in.data(), w.q, N, H,
                     QD);
  B::linear_backward(d_in.data(), or_null(g.k), or_null(g.k_bias), d_k0.data(), a.attn_in.data(), w.k, N, H,
                     KD);
  B::linear_backward(d_in.data(), or_null(g.v), or_null(g.v_bias), d_v.data(), a.attn_in.data(), w.v, N, H,
                     KD);
  B::rmsnorm_backward(d_x.data(), or_null(g.attn_norm), d_in.data(), a.x.data(), w.attn_norm.data(),
                      a.attn_rstd.data(), N, H);
}

}  // namespace upcycle
