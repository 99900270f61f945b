// The training objective and its backward: the LM head and cross-entropy in chunks of rows,
// the router's auxiliary losses (and UpIT's pre-optimisation BCE) over all layers at once, then
// the layers in reverse, each op's backward (trainer/ops) in the mirror order of the forward.
#include <algorithm>
#include <stdexcept>

#include "trainer/model.hpp"
#include "trainer/model_math.hpp"
#include "trainer/ops/attention.hpp"
#include "trainer/ops/cross_entropy.hpp"
#include "trainer/ops/embedding.hpp"
#include "trainer/ops/router.hpp"
#include "trainer/ops/router_losses.hpp"
#include "trainer/ops/swiglu.hpp"

namespace upcycle {

namespace {

// Rows of logits held at once: about 32 MB of them.
int64_t head_chunk_rows(int64_t V, size_t elem) { return std::max<int64_t>(1, int64_t(32u << 20) / (V * int64_t(elem))); }

int64_t counted(const std::vector<int32_t>& targets) {
  return std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t != ops::kIgnoreIndex; });
}

}  // namespace

template <class T>
LossReport Transformer<T>::loss(const Batch& batch, const std::vector<int32_t>& targets,
                                const LossOptions& opts) const {
  check_loss_options(batch, opts);
  Activations<T> acts;
  forward_hidden(batch, acts);
  LossReport report;
  head_loss(acts.final_out, targets, opts.normaliser, opts.ce_coef, report, nullptr, nullptr);
  router_losses(acts, opts, report, nullptr);
  return report;
}

template <class T>
LossReport Transformer<T>::loss_and_grad(const Batch& batch, const std::vector<int32_t>& targets, Weights<T>& grads,
                                         const LossOptions& opts) const {
  const ModelConfig& c = config_;
  const int64_t N = int64_t(batch.ids.size()), H = c.hidden_size;
  check_loss_options(batch, opts);
  Activations<T> acts;
  forward_hidden(batch, acts);
  LossReport report;
  std::vector<T> d_final(size_t(N * H), T(0));  // [N,H]
  T* d_head = or_null(weights_.lm_head.empty() ? grads.embedding : grads.lm_head);
  head_loss(acts.final_out, targets, opts.normaliser, opts.ce_coef, report, d_final.data(), d_head);

  std::vector<std::vector<T>> d_router(weights_.layers.size());  // L × [N,E]
  if (c.is_moe())
    for (auto& d : d_router) d.assign(size_t(N * c.num_local_experts), T(0));
  router_losses(acts, opts, report, &d_router);

  std::vector<T> d_x(size_t(N * H), T(0));  // [N,H] gradient of the last residual
  ops::rmsnorm_backward(d_x.data(), or_null(grads.final_norm), d_final.data(), acts.x.data(),
                        weights_.final_norm.data(), acts.final_rstd.data(), N, H);
  backward(batch, acts, d_x, d_router, grads);
  return report;
}

template <class T>
void Transformer<T>::check_loss_options(const Batch& batch, const LossOptions& opts) const {
  if (opts.router_targets.empty()) return;
  if (!config_.is_moe()) throw std::invalid_argument("loss: router targets given for a dense model");
  if (opts.router_targets.size() != batch.ids.size())
    throw std::invalid_argument("loss: router targets and tokens differ in number");
  for (int32_t t : opts.router_targets)
    if (t < -1 || t >= config_.num_local_experts)
      throw std::invalid_argument("loss: router target outside [-1, experts)");
}

template <class T>
void Transformer<T>::head_loss(const std::vector<T>& hidden, const std::vector<int32_t>& targets, int64_t normaliser,
                               double ce_coef, LossReport& report, T* d_hidden, T* d_head) const {
  const int64_t N = int64_t(targets.size()), H = config_.hidden_size, V = config_.vocab_size;
  if (int64_t(hidden.size()) != N * H) throw std::invalid_argument("loss: targets and tokens differ in number");
  const int64_t count = normaliser > 0 ? normaliser : counted(targets);
  const int64_t chunk = head_chunk_rows(V, sizeof(T));
  std::vector<T> logits(size_t(std::min(N, chunk) * V)), lse(size_t(std::min(N, chunk)));
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t R = std::min(chunk, N - r0);
    const T* x = hidden.data() + r0 * H;
    const int32_t* t = targets.data() + r0;
    ops::matmul_forward<T>(logits.data(), x, head().data(), nullptr, R, H, V);  // [R,V]
    const ops::CrossEntropyLoss ce = ops::cross_entropy_forward(lse.data(), logits.data(), t, R, V);
    report.ce_sum += ce.mean * double(ce.count);
    report.tokens += ce.count;
    if (!d_hidden || ce.count == 0 || ce_coef == 0) continue;
    ops::cross_entropy_backward(logits.data(), logits.data(), lse.data(), t, R, V, count, ce_coef);
    ops::matmul_backward<T>(d_hidden + r0 * H, d_head, nullptr, logits.data(), x, head().data(), R, H, V);
  }
}

template <class T>
void Transformer<T>::router_losses(const Activations<T>& acts, const LossOptions& opts, LossReport& report,
                                   std::vector<std::vector<T>>* d_logits) const {
  const ModelConfig& c = config_;
  if (!c.is_moe()) return;
  const int64_t E = c.num_local_experts, k = c.num_experts_per_tok;
  // Every layer's rows stacked: [L·N, E] and [L·N, k].
  std::vector<T> probs, logits;
  std::vector<int32_t> idx;
  for (const auto& a : acts.layers) {
    probs.insert(probs.end(), a.probs.begin(), a.probs.end());
    logits.insert(logits.end(), a.router_logits.begin(), a.router_logits.end());
    idx.insert(idx.end(), a.idx.begin(), a.idx.end());
    auto& tokens = report.expert_tokens.emplace_back(size_t(E), 0);
    for (int32_t e : a.idx) ++tokens[size_t(e)];
  }
  const int64_t rows = int64_t(probs.size()) / E;
  // The router BCE's targets, the batch's repeated for every layer: [L·N].
  std::vector<int32_t> bce_targets;
  for (size_t l = 0; l < acts.layers.size() && !opts.router_targets.empty(); ++l)
    bce_targets.insert(bce_targets.end(), opts.router_targets.begin(), opts.router_targets.end());
  const double lb_coef = opts.load_balancing ? c.router_aux_loss_coef : 0.0;
  report.aux = ops::load_balancing_loss_forward(probs.data(), idx.data(), rows, E, k, lb_coef);
  if (opts.z_loss_coef > 0) report.z = ops::router_z_loss_forward(logits.data(), rows, E, opts.z_loss_coef);
  if (!bce_targets.empty())
    report.router_bce = ops::router_bce_loss_forward(logits.data(), bce_targets.data(), rows, E, opts.router_bce_coef);
  if (!d_logits) return;
  std::vector<T> d(probs.size(), T(0));
  ops::load_balancing_loss_backward(d.data(), probs.data(), idx.data(), rows, E, k, lb_coef, opts.aux_scale);
  if (opts.z_loss_coef > 0)
    ops::router_z_loss_backward(d.data(), logits.data(), rows, E, opts.z_loss_coef, opts.aux_scale);
  if (!bce_targets.empty())
    ops::router_bce_loss_backward(d.data(), logits.data(), bce_targets.data(), rows, E, opts.router_bce_coef,
                                  opts.aux_scale);
  const size_t per_layer = d.size() / acts.layers.size();
  for (size_t l = 0; l < acts.layers.size(); ++l)
    std::copy_n(d.begin() + ptrdiff_t(l * per_layer), per_layer, (*d_logits)[l].begin());
}

// d_x [N,H] holds the gradient of the last residual; the layers run in reverse, each adding
// its FFN's and then its attention's contribution to the residual's gradient.
template <class T>
void Transformer<T>::backward(const Batch& batch, Activations<T>& acts, std::vector<T>& d_x,
                              std::vector<std::vector<T>>& d_router_logits, Weights<T>& grads) const {
  const ModelConfig& c = config_;
  const int64_t N = int64_t(batch.ids.size());
  for (size_t l = weights_.layers.size(); l-- > 0;) {
    std::vector<T> d_h = d_x;  // x_out = h + ffn(rmsnorm(h))
    ffn_backward(weights_.layers[l], acts.layers[l], d_x, d_h, d_router_logits[l], grads.layers[l]);
    d_x = d_h;  // h = x + attention(rmsnorm(x))
    attention_backward(weights_.layers[l], acts.layers[l], batch, d_h, d_x, grads.layers[l]);
    acts.layers[l] = {};  // done with it: give the memory back
  }
  if (!grads.embedding.empty())
    ops::embedding_backward(grads.embedding.data(), d_x.data(), batch.ids.data(), N, c.hidden_size, c.vocab_size);
}

// d_out [N,H] is the gradient of the FFN's output; adds the gradient of its input h into d_h.
template <class T>
void Transformer<T>::ffn_backward(const LayerWeights<T>& w, LayerActivations<T>& a, const std::vector<T>& d_out,
                                  std::vector<T>& d_h, std::vector<T>& d_router_logits, LayerWeights<T>& g) const {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, N = int64_t(a.h.size()) / H;
  std::vector<T> d_in(size_t(N * H), T(0));  // [N,H] gradient of ffn_in
  if (c.is_moe()) {
    const int64_t E = c.num_local_experts, k = c.num_experts_per_tok;
    std::vector<T> d_w(size_t(N * k), T(0));  // [N,k]
    ops::moe_backward(d_in.data(), d_w.data(), ExpertGradPointers<T>(g).grads(), d_out.data(), a.w.data(),
                      ExpertPointers<T>(w).weights(), a.moe, moe_shape(N));
    ops::router_backward(d_router_logits.data(), d_w.data(), a.w.data(), a.idx.data(), N, E, k);
    ops::matmul_backward(d_in.data(), or_null(g.router), static_cast<T*>(nullptr), d_router_logits.data(),
                         a.ffn_in.data(), w.router.data(), N, H, E);
  } else {
    const int64_t I = c.intermediate_size;
    std::vector<T> d_act(size_t(N * I), T(0)), d_gate(size_t(N * I), T(0)), d_up(size_t(N * I), T(0));  // [N,I]
    ops::matmul_backward(d_act.data(), or_null(g.down), static_cast<T*>(nullptr), d_out.data(), a.act.data(),
                         w.down.data(), N, I, H);
    ops::swiglu_backward(d_gate.data(), d_up.data(), d_act.data(), a.gate.data(), a.up.data(), N * I);
    ops::matmul_backward(d_in.data(), or_null(g.gate), static_cast<T*>(nullptr), d_gate.data(), a.ffn_in.data(),
                         w.gate.data(), N, H, I);
    ops::matmul_backward(d_in.data(), or_null(g.up), static_cast<T*>(nullptr), d_up.data(), a.ffn_in.data(),
                         w.up.data(), N, H, I);
  }
  ops::rmsnorm_backward(d_h.data(), or_null(g.ffn_norm), d_in.data(), a.h.data(), w.ffn_norm.data(),
                        a.ffn_rstd.data(), N, H);
}

// d_out [N,H] is the gradient of the attention block's output; adds the gradient of its input
// x into d_x.
template <class T>
void Transformer<T>::attention_backward(const LayerWeights<T>& w, const LayerActivations<T>& a, const Batch& batch,
                                        const std::vector<T>& d_out, std::vector<T>& d_x, LayerWeights<T>& g) const {
  const ModelConfig& c = config_;
  const int64_t N = int64_t(batch.ids.size()), H = c.hidden_size, QD = c.q_dim(), KD = c.kv_dim();
  std::vector<T> d_attn(size_t(N * QD), T(0));  // [N,nH·D]
  ops::matmul_backward(d_attn.data(), or_null(g.o), static_cast<T*>(nullptr), d_out.data(), a.attn.data(),
                       w.o.data(), N, QD, H);
  std::vector<T> d_q(size_t(N * QD), T(0)), d_k(size_t(N * KD), T(0)), d_v(size_t(N * KD), T(0));
  ops::attention_backward(d_q.data(), d_k.data(), d_v.data(), d_attn.data(), a.q.data(), a.k.data(), a.v.data(),
                          a.attn.data(), a.lse.data(), batch.cu_seqlens.data(), int64_t(batch.cu_seqlens.size()) - 1,
                          attention_shape(N));
  // Undo the rotation: the gradients of q and k before rope.
  std::vector<T> d_q0(d_q.size(), T(0)), d_k0(d_k.size(), T(0));
  ops::rope_backward(d_q0.data(), d_q.data(), batch.positions.data(), rope_, N, c.num_attention_heads);
  ops::rope_backward(d_k0.data(), d_k.data(), batch.positions.data(), rope_, N, c.num_key_value_heads);
  std::vector<T> d_in(size_t(N * H), T(0));  // [N,H] gradient of attn_in
  ops::matmul_backward(d_in.data(), or_null(g.q), or_null(g.q_bias), d_q0.data(), a.attn_in.data(), w.q.data(), N, H,
                       QD);
  ops::matmul_backward(d_in.data(), or_null(g.k), or_null(g.k_bias), d_k0.data(), a.attn_in.data(), w.k.data(), N, H,
                       KD);
  ops::matmul_backward(d_in.data(), or_null(g.v), or_null(g.v_bias), d_v.data(), a.attn_in.data(), w.v.data(), N, H,
                       KD);
  ops::rmsnorm_backward(d_x.data(), or_null(g.attn_norm), d_in.data(), a.x.data(), w.attn_norm.data(),
                        a.attn_rstd.data(), N, H);
}

// The members defined here, for both precisions (the class itself is instantiated in model.cpp).
#define UPCYCLE_INSTANTIATE(T)                                                                                     \
  template LossReport Transformer<T>::loss(const Batch&, const std::vector<int32_t>&, const LossOptions&) const;   \
  template LossReport Transformer<T>::loss_and_grad(const Batch&, const std::vector<int32_t>&, Weights<T>&,         \
                                                    const LossOptions&) const;
UPCYCLE_INSTANTIATE(float)
UPCYCLE_INSTANTIATE(double)
#undef UPCYCLE_INSTANTIATE

}  // namespace upcycle
