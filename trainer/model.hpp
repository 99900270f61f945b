// The transformer on the CPU: a checkpoint's weights in f32 and the forward pass of the
// Llama-family models (llama, mistral, qwen2, mixtral) over the reference ops in trainer/ops.
// Shapes: N tokens (sequences packed back to back), H hidden, V vocabulary, nH / nKV heads of
// width D, I the FFN (or each expert's) width, E experts of which k are chosen per token.
#pragma once
#include <cstdint>
#include <filesystem>
#include <vector>

#include "core/checkpoint.hpp"
#include "trainer/ops/moe.hpp"
#include "trainer/ops/rope.hpp"

namespace upcycle {

// One layer's weights, row major as nn.Linear stores them ([out, in]).
struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;     // [H]
  std::vector<float> q, k, v, o;              // [nH·D, H], [nKV·D, H], [nKV·D, H], [H, nH·D]
  std::vector<float> q_bias, k_bias, v_bias;  // [nH·D], [nKV·D], [nKV·D]; empty without attention_bias
  std::vector<float> gate, up, down;          // dense FFN: [I, H], [I, H], [H, I]; empty for MoE
  std::vector<float> router;                  // [E, H]; empty for dense
  std::vector<std::vector<float>> expert_gate, expert_up, expert_down;  // E × [I, H], [I, H], [H, I]
};

struct Weights {
  std::vector<float> embedding;  // [V, H]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [H]
  std::vector<float> lm_head;     // [V, H]; empty when tied to the embedding
};

// Every tensor of the checkpoint by role (per-expert or fused experts), converted to f32.
// InputError naming the file and tensor when one is missing or misshapen, or the model type is
// not one the forward pass computes.
Weights load_weights(const Checkpoint& ckpt);

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

// What one layer's forward computed, kept for a backward.
struct LayerActivations {
  std::vector<float> x;                  // [N, H]     the layer's input (the residual stream)
  std::vector<float> attn_in, attn_rstd;  // [N, H], [N]  rmsnorm(x) and its 1/rms
  std::vector<float> q, k, v;            // [N, nH·D], [N, nKV·D], [N, nKV·D]  q and k after rope
  std::vector<float> attn, lse;          // [N, nH·D], [nH, N]
  std::vector<float> h;                  // [N, H]     x + attn·oᵀ
  std::vector<float> ffn_in, ffn_rstd;   // [N, H], [N]  rmsnorm(h) and its 1/rms
  std::vector<float> gate, up, act;      // dense: [N, I] each
  std::vector<float> router_logits, probs, w;  // MoE: [N, E], [N, E], [N, k]
  std::vector<int32_t> idx;                    // MoE: [N, k]
  ops::MoeSaved<float> moe;
};

struct Activations {
  std::vector<LayerActivations> layers;
  std::vector<float> x, final_rstd, final_out;  // [N, H] last residual, [N], [N, H] its rmsnorm
};

class Model {
 public:
  explicit Model(const Checkpoint& ckpt);

  const ModelConfig& config() const { return config_; }
  const Weights& weights() const { return weights_; }

  // logits [N, V]; std::invalid_argument when the batch's sizes disagree or an id or a
  // position is out of range.
  std::vector<float> forward(const Batch& batch) const;
  std::vector<float> forward(const Batch& batch, Activations& acts) const;

 private:
  void attention_block(const LayerWeights& w, LayerActivations& a, const Batch& batch) const;
  std::vector<float> dense_ffn(const LayerWeights& w, LayerActivations& a) const;
  std::vector<float> moe_ffn(const LayerWeights& w, LayerActivations& a) const;

  ModelConfig config_;
  Weights weights_;
  ops::RopeTable<float> rope_;
};

}  // namespace upcycle
