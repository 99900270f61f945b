// The transformer: a checkpoint's weights and the forward and backward passes of the
// Llama-family models (llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe), written once
// over a backend of ops B:
// CpuBackend<T> (trainer/ops; T is float for real work and double for the gradient checks) or
// the GPU's (cuda/backend.hpp). Transformer<T> is the CPU model.
// Shapes: N tokens (sequences packed back to back), H hidden, V vocabulary, nH / nKV heads of
// width D, I the FFN (or each expert's) width, E experts of which k are chosen per token,
// L layers.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "trainer/batch.hpp"
#include "trainer/cpu_backend.hpp"
#include "trainer/ops/attention.hpp"
#include "trainer/ops/moe.hpp"
#include "trainer/weights.hpp"

namespace upcycle {

// What one layer's forward computed, kept for the backward. A: activations, S: per-row
// statistics and router values, I: int32, each in the backend's buffers.
template <class B>
struct LayerActivations {
  using A = typename B::template Vec<typename B::Act>;
  using S = typename B::template Vec<typename B::Stat>;
  A x;                     // [N, H]     the layer's input (the residual stream)
  A attn_in;               // [N, H]     rmsnorm(x)
  S attn_rstd;             // [N]        its 1/rms
  A q, k, v;               // [N, nH·D], [N, nKV·D], [N, nKV·D]  q and k after rope
  A q_raw, k_raw;          // qwen3: q and k before their per-head norms
  S q_rstd, k_rstd;        // qwen3: those norms' 1/rms [N·nH], [N·nKV]
  A attn;                  // [N, nH·D]
  S lse;                   // [nH, N]
  A h;                     // [N, H]     x + attn·oᵀ
  A ffn_in;                // [N, H]     rmsnorm(h)
  S ffn_rstd;              // [N]
  A gate, up, act;         // dense: [N, I] each
  S router_logits, probs, w;  // MoE: [N, E], [N, E], [N, k]
  typename B::template Vec<int32_t> idx;  // MoE: [N, k]
  typename B::MoeSaved moe;
  A shared_gate, shared_up, shared_act;  // qwen2_moe's shared expert: [N, Is] each
  A shared_y;                            // [N, H]  its output, before its gate
  S shared_logit;                        // [N]     its gate's logit
};

// What a forward keeps of each layer once it is done: its routing alone (router_logits, probs,
// idx: what the router's losses and figures read; memory of one layer's activations, reused
// layer after layer), that and its input (the backward computes the layer again), that and the
// FFN's input (ffn_inputs), or all its activations.
enum class Keep { Routing, InputAndRouting, FfnInputAndRouting, All };

// The batch in the backend's memory, and every layer's activations.
template <class B>
struct Activations {
  typename B::template Vec<int32_t> ids, positions, cu_seqlens;  // [N], [N], [S+1]
  int64_t max_seqlen = 0;
  const std::vector<std::vector<float>>* selection_bias = nullptr;  // the forward's, for a layer computed again
  std::vector<LayerActivations<B>> layers;
  typename B::template Vec<typename B::Act> x, final_out;  // [N, H] last residual and its rmsnorm
  typename B::template Vec<typename B::Stat> final_rstd;   // [N]
};

// How the load-balancing loss counts layers. PerLayer (the Switch Transformer's and UpIT's): each
// MoE layer's E·Σ_e f_e·P_e on its own rows, averaged over layers, so that no layer can collapse
// while the others hide it. Global (transformers' Mixtral): every layer's rows concatenated
// before f and P are taken, kept for comparison. GlobalBatch (Qwen3-MoE): per layer, with f
// counted over the whole step (every micro-batch: LossOptions::balance_counts), not the batch.
enum class AuxLoss { PerLayer, Global, GlobalBatch };

// "per-layer", "global" or "global-batch"; UsageError otherwise.
AuxLoss parse_aux_loss(const std::string& name);
std::string aux_loss_name(AuxLoss a);

// How tuning balances an MoE's experts: the load-balancing loss (AuxLoss), or a per-expert
// selection bias with no loss (trainer/selection_bias.hpp).
enum class Balance { Loss, Bias };
Balance parse_balance(const std::string& name);  // "loss" or "bias"; UsageError otherwise
std::string balance_name(Balance b);

// The training objective of one batch: ce_coef × next-token cross-entropy plus, for MoE, the
// router's load-balancing loss (coef = config's router_aux_loss_coef), an optional z-loss and
// UpIT's optional router pre-optimisation BCE (ops::router_bce_loss).
struct LossOptions {
  double z_loss_coef = 0;  // router z-loss coefficient; 0: off
  bool load_balancing = true;  // the config's load-balancing loss; off in UpIT's router pre-optimisation
  AuxLoss aux_loss = AuxLoss::PerLayer;
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
  // Auxiliary-loss-free balancing (DeepSeek-V3): [L][E] added to the router's probabilities to
  // choose the top k, never to the gate weights. Empty: none. std::invalid_argument for a dense
  // model or another shape.
  std::vector<std::vector<float>> selection_bias;
  // Global-batch balancing: [L][E] the step's routed slots per expert and the tokens they were
  // counted over, from a routing pass over all its micro-batches. Empty: f from this batch.
  std::vector<std::vector<int64_t>> balance_counts;
  int64_t balance_tokens = 0;
  double router_bce_coef = 0;
  // Scales the cross-entropy term (and its gradient); UpIT's pre-optimisation uses 0.5. Only the
  // gradient is scaled: LossReport::ce_sum stays the plain sum, so reports of runs with different
  // ce_coef remain comparable (the objective is ce_coef·ce() + aux + z + router_bce).
  double ce_coef = 1;
  // LoRA dropout's masks for this micro-batch (an engine training an adapter with dropout;
  // 0: none). Each seed draws other masks; the same seed the same ones.
  uint64_t dropout_seed = 0;
  // loss() only: each packed sequence's cross-entropy as well (LossReport::sequence_ce_sum), so
  // that many samples are scored in one pass.
  bool per_sequence = false;
  // loss_and_grad() only: the forward keeps each layer's input (and routing) alone and the
  // backward computes the layer again before its gradients: the memory of one layer's
  // activations instead of every layer's, for one more forward pass; the same bits.
  bool recompute = false;
};

struct LossReport {
  double ce_sum = 0;      // Σ over counted tokens of −log p(target), not scaled by ce_coef
  int64_t tokens = 0;     // counted tokens
  double aux = 0;         // load-balancing loss (already times coef); 0 for dense
  double z = 0;           // z-loss (already times its coef)
  double router_bce = 0;  // router pre-optimisation BCE (already times its coef); 0 when off
  std::vector<std::vector<int64_t>> expert_tokens;  // MoE: [L][E] slots routed to each expert
  std::vector<double> router_entropy;  // MoE: [L] Σ over tokens of the router distribution's entropy (nats)
  // MoE, loss() only: [L][E] slots routed to each expert from the positions whose target counts
  // (the reply: which experts a task's answers go to).
  std::vector<std::vector<int64_t>> counted_expert_tokens;
  int64_t routed = 0;                  // MoE: tokens routed in each layer
  // With LossOptions::per_sequence: [S] each sequence's ce_sum and counted tokens.
  std::vector<double> sequence_ce_sum;
  std::vector<int64_t> sequence_tokens;
  double ce() const { return tokens ? ce_sum / double(tokens) : 0.0; }
};

template <class B>
class BasicTransformer {
 public:
  using Act = typename B::Act;    // activations and the weights the forward reads
  using Stat = typename B::Stat;  // per-row statistics, router logits and weights
  using Grad = typename B::Grad;  // weight gradients
  template <class U>
  using Vec = typename B::template Vec<U>;
  using Weight = typename B::Weight;  // one weight tensor as the backend holds it
  using WeightSet = WeightsOf<Weight>;
  using GradSet = WeightsOf<typename B::GradTensor>;

  explicit BasicTransformer(const Checkpoint& ckpt);
  BasicTransformer(ModelConfig config, WeightSet weights, const std::filesystem::path& source);

  const ModelConfig& config() const { return config_; }
  const WeightSet& weights() const { return weights_; }
  WeightSet& weights() { return weights_; }
  // The LM head [V, H]: lm_head, or the embedding when tied.
  const Weight& head() const { return weights_.lm_head.empty() ? weights_.embedding : weights_.lm_head; }
  const typename B::Rope& rope() const { return rope_; }

  // logits [N, V]; std::invalid_argument when the batch's sizes disagree or an id or a
  // position is out of range.
  Vec<Act> forward(const Batch& batch) const;

  // Each layer's FFN input, rmsnorm(h) with h after attention: the router's input. [L][N, H]
  std::vector<Vec<Act>> ffn_inputs(const Batch& batch) const;

  // The loss of the batch; targets[N] is the token each position predicts, ops::kIgnoreIndex
  // where nothing counts. The LM head and softmax run in chunks of rows: no [N, V] buffer.
  LossReport loss(const Batch& batch, const std::vector<int32_t>& targets, const LossOptions& opts = {}) const;
  // The same, and adds the gradients into `grads` (shaped like the weights; an empty tensor
  // is frozen and gets nothing).
  LossReport loss_and_grad(const Batch& batch, const std::vector<int32_t>& targets, GradSet& grads,
                           const LossOptions& opts = {}) const;

 private:
  using Acts = Activations<B>;
  using LayerActs = LayerActivations<B>;
  using Layer = LayerWeightsOf<Weight>;
  using LayerGrads = LayerWeightsOf<typename B::GradTensor>;

  // Everything up to the final norm; acts.final_out [N, H]. selection_bias: as LossOptions'
  // (it must outlive acts).
  void forward_hidden(const Batch& batch, Acts& acts, const std::vector<std::vector<float>>& selection_bias,
                      Keep keep) const;
  // Layer l's activations, from its input a.x alone (Keep::InputAndRouting), as the forward made them.
  void layer_again(size_t l, LayerActs& a, const Acts& acts) const;
  void attention_block(const Layer& w, LayerActs& a, const Acts& acts) const;
  Vec<Act> dense_ffn(const Layer& w, LayerActs& a) const;
  Vec<Act> moe_ffn(const Layer& w, LayerActs& a, const std::vector<float>* selection_bias) const;
  // out += σ(ffn_in·shared_routerᵀ) ⊙ the shared expert's FFN of ffn_in (qwen2_moe)
  void shared_expert(const Layer& w, LayerActs& a, Vec<Act>& out) const;
  // (silu(in·gateᵀ) ⊙ in·upᵀ)·downᵀ [N,H], an FFN of width I; keeps g, u, act [N,I] for the
  // backward, which adds the gradient of in into d_in and the weights' into d_gate, d_up, d_down.
  Vec<Act> swiglu(const Vec<Act>& in, const Weight& gate, const Weight& up, const Weight& down, int64_t I, Vec<Act>& g,
                  Vec<Act>& u, Vec<Act>& act) const;
  void swiglu_backward(Vec<Act>& d_in, const Vec<Act>& d_out, const Vec<Act>& in, const Vec<Act>& g, const Vec<Act>& u,
                       const Vec<Act>& act, const Weight& gate, const Weight& up, const Weight& down,
                       typename B::GradTensor& d_gate, typename B::GradTensor& d_up, typename B::GradTensor& d_down,
                       int64_t I) const;
  // out[N,O] = in[N,I]·Wᵀ + bias
  Vec<Act> linear(const Vec<Act>& in, const Weight& W, const Weight& bias, int64_t N, int64_t I, int64_t O) const;
  // out[N,C] = rmsnorm(in[N,C]) ⊙ weight, rstd[N]
  void rmsnorm(Vec<Act>& out, Vec<Stat>& rstd, const Vec<Act>& in, const Weight& weight, int64_t N) const;
  // Qwen3's per-head norm of x [rows = N·heads, D] in place: raw keeps x as it was, rstd [rows]
  // its 1/rms. head_norm_backward: the gradient of raw from that of x.
  void head_norm(Vec<Act>& x, Vec<Act>& raw, Vec<Stat>& rstd, const Weight& weight, int64_t rows) const;
  Vec<Act> head_norm_backward(const Vec<Act>& d_x, const Vec<Act>& raw, const Vec<Stat>& rstd, const Weight& weight,
                              typename B::GradTensor& d_weight, int64_t rows) const;
  // The head and the cross-entropy, chunk by chunk; with d_hidden, also their backward:
  // d_hidden [N, H] receives the gradient of final_out and d_head the head's.
  // The gradient is that of ce_coef · ce_sum / normaliser. With `sequences` (cu_seqlens [S+1]),
  // chunks end at the sequences' ends and each sequence's sum goes to report.sequence_ce_sum.
  void head_loss(const Vec<Act>& hidden, const std::vector<int32_t>& targets, int64_t normaliser, double ce_coef,
                 LossReport& report, Act* d_hidden, Grad* d_head, const std::vector<int32_t>* sequences = nullptr) const;
  // std::invalid_argument when opts asks for what the model or the batch cannot give.
  void check_loss_options(const Batch& batch, const LossOptions& opts) const;
  // The router losses over every layer's rows at once (transformers' convention), and the
  // routing telemetry (slots per expert, router entropy; with counted_targets, also the slots of
  // the positions whose target counts); with d_logits (one [N, E] per layer), adds their
  // gradients there.
  void router_losses(const Acts& acts, const LossOptions& opts, LossReport& report, std::vector<Vec<Stat>>* d_logits,
                     const std::vector<int32_t>* counted_targets = nullptr) const;
  void backward(Acts& acts, Vec<Act>& d_x, std::vector<Vec<Stat>>& d_router_logits, GradSet& grads) const;
  void ffn_backward(const Layer& w, LayerActs& a, const Vec<Act>& d_out, Vec<Act>& d_h, Vec<Stat>& d_router_logits,
                    LayerGrads& g) const;
  void attention_backward(const Layer& w, const LayerActs& a, const Acts& acts, const Vec<Act>& d_out,
                          Vec<Act>& d_x, LayerGrads& g) const;
  ops::AttentionShape attention_shape(int64_t N) const;
  ops::MoeShape moe_shape(int64_t N) const;

  ModelConfig config_;
  WeightSet weights_;
  typename B::Rope rope_;
};

template <class T>
using Transformer = BasicTransformer<CpuBackend<T>>;
using Model = Transformer<float>;

}  // namespace upcycle
