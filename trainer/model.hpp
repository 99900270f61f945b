// The transformer on the CPU: a checkpoint's weights and the forward and backward passes of the
// Llama-family models (llama, mistral, qwen2, mixtral) over the reference ops in trainer/ops.
// T is float for real work and double for the gradient checks.
// Shapes: N tokens (sequences packed back to back), H hidden, V vocabulary, nH / nKV heads of
// width D, I the FFN (or each expert's) width, E experts of which k are chosen per token,
// L layers.
#pragma once
#include <cstdint>
#include <filesystem>
#include <vector>

#include "core/checkpoint.hpp"
#include "trainer/ops/attention.hpp"
#include "trainer/ops/moe.hpp"
#include "trainer/ops/rope.hpp"

namespace upcycle {

// One layer's weights, row major as nn.Linear stores them ([out, in]). The same structure
// holds gradients and optimizer moments; there an empty buffer is a frozen tensor.
template <class T>
struct LayerWeights {
  std::vector<T> attn_norm, ffn_norm;     // [H]
  std::vector<T> q, k, v, o;              // [nH·D, H], [nKV·D, H], [nKV·D, H], [H, nH·D]
  std::vector<T> q_bias, k_bias, v_bias;  // [nH·D], [nKV·D], [nKV·D]; empty without attention_bias
  std::vector<T> gate, up, down;          // dense FFN: [I, H], [I, H], [H, I]; empty for MoE
  std::vector<T> router;                  // [E, H]; empty for dense
  std::vector<std::vector<T>> expert_gate, expert_up, expert_down;  // E × [I, H], [I, H], [H, I]
};

template <class T>
struct Weights {
  std::vector<T> embedding;  // [V, H]
  std::vector<LayerWeights<T>> layers;
  std::vector<T> final_norm;  // [H]
  std::vector<T> lm_head;     // [V, H]; empty when tied to the embedding
};

// Every tensor of the checkpoint by role (per-expert or fused experts), converted to T.
// InputError naming the file and tensor when one is missing or misshapen, or the model type is
// not one the forward pass computes.
template <class T>
Weights<T> load_weights(const Checkpoint& ckpt);

// config.json's rope_scaling: absent or "default", "linear", "llama3"; InputError naming
// `source` for any other type (those change the attention itself).
ops::RopeScaling rope_scaling(const ModelConfig& config, const std::filesystem::path& source);

// Sequences packed into one row: sequence s is tokens [cu_seqlens[s], cu_seqlens[s+1]) and its
// positions restart at 0.
struct Batch {
  std::vector<int32_t> ids;         // [N]
  std::vector<int32_t> positions;   // [N]
  std::vector<int32_t> cu_seqlens;  // [S+1]
};
Batch pack(const std::vector<std::vector<int32_t>>& sequences);

// What one layer's forward computed, kept for the backward.
template <class T>
struct LayerActivations {
  std::vector<T> x;                    // [N, H]     the layer's input (the residual stream)
  std::vector<T> attn_in, attn_rstd;   // [N, H], [N]  rmsnorm(x) and its 1/rms
  std::vector<T> q, k, v;              // [N, nH·D], [N, nKV·D], [N, nKV·D]  q and k after rope
  std::vector<T> attn, lse;            // [N, nH·D], [nH, N]
  std::vector<T> h;                    // [N, H]     x + attn·oᵀ
  std::vector<T> ffn_in, ffn_rstd;     // [N, H], [N]  rmsnorm(h) and its 1/rms
  std::vector<T> gate, up, act;        // dense: [N, I] each
  std::vector<T> router_logits, probs, w;  // MoE: [N, E], [N, E], [N, k]
  std::vector<int32_t> idx;                // MoE: [N, k]
  ops::MoeSaved<T> moe;
};

template <class T>
struct Activations {
  std::vector<LayerActivations<T>> layers;
  std::vector<T> x, final_rstd, final_out;  // [N, H] last residual, [N], [N, H] its rmsnorm
};

// The training objective of one batch: ce_coef × next-token cross-entropy plus, for MoE, the
// router's load-balancing loss (coef = config's router_aux_loss_coef), an optional z-loss and
// UpIT's optional router pre-optimisation BCE (ops::router_bce_loss).
struct LossOptions {
  double z_loss_coef = 0;  // router z-loss coefficient; 0: off
  bool load_balancing = true;  // the config's load-balancing loss; off in UpIT's router pre-optimisation
  // The cross-entropy is a sum over counted tokens divided by `normaliser` (0: this batch's own
  // count); with gradient accumulation it is the whole step's count, and aux_scale is
  // 1 / micro-batches so the step's gradient is that of the mean objective.
  int64_t normaliser = 0;
  double aux_scale = 1;
  // UpIT's router pre-optimisation: per token (of the batch) the expert its sample was assigned to, -1 where none;
  // adds router_bce_coef × router_bce_loss over every layer's router logits. Empty: off.
  // All layers' rows go to the op at once (the same targets for every layer's router), so the
  // BCE is a mean over layers, tokens and experts. std::invalid_argument for a dense model, a
  // size other than the batch's tokens, or an expert outside [-1, E).
  std::vector<int32_t> router_targets;
  double router_bce_coef = 0;
  // Scales the cross-entropy term (and its gradient); UpIT's pre-optimisation uses 0.5. Only the
  // gradient is scaled: LossReport::ce_sum stays the plain sum, so reports of runs with different
  // ce_coef remain comparable (the objective is ce_coef·ce() + aux + z + router_bce).
  double ce_coef = 1;
};

struct LossReport {
  double ce_sum = 0;      // Σ over counted tokens of −log p(target), not scaled by ce_coef
  int64_t tokens = 0;     // counted tokens
  double aux = 0;         // load-balancing loss (already times coef); 0 for dense
  double z = 0;           // z-loss (already times its coef)
  double router_bce = 0;  // router pre-optimisation BCE (already times its coef); 0 when off
  std::vector<std::vector<int64_t>> expert_tokens;  // MoE: [L][E] slots routed to each expert
  double ce() const { return tokens ? ce_sum / double(tokens) : 0.0; }
};

template <class T>
class Transformer {
 public:
  explicit Transformer(const Checkpoint& ckpt);
  Transformer(ModelConfig config, Weights<T> weights, const std::filesystem::path& source);

  const ModelConfig& config() const { return config_; }
  const Weights<T>& weights() const { return weights_; }
  Weights<T>& weights() { return weights_; }
  // The LM head [V, H]: lm_head, or the embedding when tied.
  const std::vector<T>& head() const { return weights_.lm_head.empty() ? weights_.embedding : weights_.lm_head; }
  const ops::RopeTable<T>& rope() const { return rope_; }

  // logits [N, V]; std::invalid_argument when the batch's sizes disagree or an id or a
  // position is out of range.
  std::vector<T> forward(const Batch& batch) const;

  // Each layer's FFN input, rmsnorm(h) with h after attention: the router's input. [L][N, H]
  std::vector<std::vector<T>> ffn_inputs(const Batch& batch) const;

  // The loss of the batch; targets[N] is the token each position predicts, ops::kIgnoreIndex
  // where nothing counts. The LM head and softmax run in chunks of rows: no [N, V] buffer.
  LossReport loss(const Batch& batch, const std::vector<int32_t>& targets, const LossOptions& opts = {}) const;
  // The same, and adds the gradients into `grads` (shaped like the weights; an empty tensor
  // is frozen and gets nothing).
  LossReport loss_and_grad(const Batch& batch, const std::vector<int32_t>& targets, Weights<T>& grads,
                           const LossOptions& opts = {}) const;

 private:
  // Everything up to the final norm; acts.final_out [N, H].
  void forward_hidden(const Batch& batch, Activations<T>& acts) const;
  void attention_block(const LayerWeights<T>& w, LayerActivations<T>& a, const Batch& batch) const;
  std::vector<T> dense_ffn(const LayerWeights<T>& w, LayerActivations<T>& a) const;
  std::vector<T> moe_ffn(const LayerWeights<T>& w, LayerActivations<T>& a) const;
  // The head and the cross-entropy, chunk by chunk; with d_hidden, also their backward:
  // d_hidden [N, H] receives the gradient of final_out and d_head the head's.
  // The gradient is that of ce_coef · ce_sum / normaliser.
  void head_loss(const std::vector<T>& hidden, const std::vector<int32_t>& targets, int64_t normaliser,
                 double ce_coef, LossReport& report, T* d_hidden, T* d_head) const;
  // std::invalid_argument when opts asks for what the model or the batch cannot give.
  void check_loss_options(const Batch& batch, const LossOptions& opts) const;
  // The router losses over every layer's rows at once (transformers' convention); with
  // d_logits (one [N, E] per layer), adds their gradients there.
  void router_losses(const Activations<T>& acts, const LossOptions& opts, LossReport& report,
                     std::vector<std::vector<T>>* d_logits) const;
  void backward(const Batch& batch, Activations<T>& acts, std::vector<T>& d_x,
                std::vector<std::vector<T>>& d_router_logits, Weights<T>& grads) const;
  void ffn_backward(const LayerWeights<T>& w, LayerActivations<T>& a, const std::vector<T>& d_out,
                    std::vector<T>& d_h, std::vector<T>& d_router_logits, LayerWeights<T>& g) const;
  void attention_backward(const LayerWeights<T>& w, const LayerActivations<T>& a, const Batch& batch,
                          const std::vector<T>& d_out, std::vector<T>& d_x, LayerWeights<T>& g) const;
  ops::AttentionShape attention_shape(int64_t N) const;
  ops::MoeShape moe_shape(int64_t N) const;

  ModelConfig config_;
  Weights<T> weights_;
  ops::RopeTable<T> rope_;
};

using Model = Transformer<float>;

}  // namespace upcycle
