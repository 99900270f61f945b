// A model's weights by role: one buffer per tensor (per expert for MoE), in the layout the
// forward and backward read, and loading them from a checkpoint.
// Shapes: H hidden, V vocabulary, nH / nKV heads of width D, I the FFN (or each expert's)
// width, E experts, Is the shared expert's width.
#pragma once
#include <filesystem>
#include <vector>

#include "core/checkpoint.hpp"
#include "trainer/ops/rope.hpp"

namespace upcycle {

// One layer's weights, row major as nn.Linear stores them ([out, in]), each tensor a buffer V
// (std::vector<T> on the CPU, a device buffer on the GPU). The same structure holds gradients
// and optimizer moments; there an empty buffer is a frozen tensor.
template <class V>
struct LayerWeightsOf {
  V attn_norm, ffn_norm;     // [H]
  V q, k, v, o;              // [nH·D, H], [nKV·D, H], [nKV·D, H], [H, nH·D]
  V q_bias, k_bias, v_bias;  // [nH·D], [nKV·D], [nKV·D]; empty without attention_bias
  V q_norm, k_norm;          // [D] each (qwen3); empty for the other families
  V gate, up, down;          // dense FFN: [I, H], [I, H], [H, I]; empty for MoE
  V router;                  // [E, H]; empty for dense
  std::vector<V> expert_gate, expert_up, expert_down;  // E × [I, H], [I, H], [H, I]
  // qwen2_moe's shared expert, on every token: [Is, H], [Is, H], [H, Is], and its sigmoid
  // gate's row [1, H] (shared_expert_gate); empty for the other families
  V shared_gate, shared_up, shared_down, shared_router;
};

template <class V>
struct WeightsOf {
  V embedding;  // [V, H]
  std::vector<LayerWeightsOf<V>> layers;
  V final_norm;  // [H]
  V lm_head;     // [V, H]; empty when tied to the embedding
};

template <class T>
using LayerWeights = LayerWeightsOf<std::vector<T>>;
template <class T>
using Weights = WeightsOf<std::vector<T>>;

// Every tensor of the checkpoint by role (per-expert or fused experts), converted to T.
// InputError naming the file and tensor when one is missing or misshapen, or the model type is
// not one the forward pass computes.
template <class T>
Weights<T> load_weights(const Checkpoint& ckpt);

// config.json's rope_scaling: absent or "default", "linear", "llama3"; InputError naming
// `source` for any other type (those change the attention itself).
ops::RopeScaling rope_scaling(const ModelConfig& config, const std::filesystem::path& source);

}  // namespace upcycle
