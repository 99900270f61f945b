// A model's Hugging Face config.json: the fields the tool computes with, validated, plus the
// whole original object so that fields we do not know are written back unchanged.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace upcycle {

// config.json's rope_scaling, for the types whose inv_freq transformers adjusts without changing
// the attention scale.
struct RopeScaling {
  enum class Type { Default, Linear, Llama3 };
  Type type = Type::Default;
  double factor = 1.0;                             // linear, llama3
  double low_freq_factor = 1.0;                    // llama3
  double high_freq_factor = 4.0;                   // llama3
  double original_max_position_embeddings = 8192;  // llama3
};

// rope_scaling (null: none; absent, "default", "linear" or "llama3"); InputError naming `source`
// for another type or a value out of range.
RopeScaling parse_rope_scaling(const nlohmann::ordered_json& j, const std::filesystem::path& source);

// llama3's blend for a frequency f: 1 keeps f (wavelengths below original/high_freq_factor), 0
// divides it by `factor` (above original/low_freq_factor), linear in 1/wavelength between
// (transformers' _compute_llama3_parameters).
double llama3_smooth(double f, const RopeScaling& s);

// inv_freq[D/2]: theta^(-2i/D); linear divides every one by `factor`; llama3 blends f and
// f / factor by llama3_smooth. Rounded to fp32, each step as transformers computes it.
std::vector<float> rope_inv_freq(int64_t head_dim, double theta, const RopeScaling& scaling);

struct ModelConfig {
  std::string model_type;  // llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // dense FFN width; each expert's width for mixtral
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_attention_heads unless the config gives it
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  nlohmann::ordered_json rope_scaling;  // null when absent; checked by parse_rope_scaling on read
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v (and for llama o) biases; always on for qwen2
  std::optional<int64_t> sliding_window;  // mistral / qwen2 when enabled

  // Mixture of experts (0 experts: dense).
  int64_t num_local_experts = 0;
  int64_t num_experts_per_tok = 0;
  double router_aux_loss_coef = 0.01;
  // The top-k routing weights renormalised to sum to 1: always for mixtral; the qwen MoEs'
  // norm_topk_prob (transformers' default false: the chosen experts' softmax probabilities as
  // they are).
  bool norm_topk_prob = true;
  // qwen2_moe and qwen3_moe: an expert's width; qwen2_moe: the shared expert's
  int64_t moe_intermediate_size = 0;
  int64_t shared_expert_intermediate_size = 0;

  nlohmann::ordered_json raw;  // the object as read (or as built), key order kept

  // Parses and validates; errors name `source` and the field.
  static ModelConfig from_json(const nlohmann::ordered_json& j, const std::filesystem::path& source);
  static ModelConfig load(const std::filesystem::path& config_json);
  // Our fields written over `raw`, so unknown fields pass through unchanged.
  nlohmann::ordered_json to_json() const;
  void validate(const std::filesystem::path& source) const;

  bool is_moe() const { return num_local_experts > 0; }
  // Qwen2-MoE's shared expert, beside the routed ones on every token behind a sigmoid gate.
  bool has_shared_expert() const { return model_type == "qwen2_moe"; }
  // Qwen3's RMSNorm of each head's q and k (weights q_norm, k_norm [head_dim]) before rope.
  bool qk_norm() const { return model_type == "qwen3" || model_type == "qwen3_moe"; }
  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  // Width of one routed expert's FFN.
  int64_t expert_intermediate_size() const {
    return model_type == "qwen2_moe" || model_type == "qwen3_moe" ? moe_intermediate_size : intermediate_size;
  }
};

// The shape of the MoE convert makes.
struct MoeShapeOptions {
  int64_t experts = 0;
  int64_t top_k = 2;
  double aux_loss_coef = 0.01;
  // The qwen MoEs' norm_topk_prob (Mixtral always renormalises): true keeps E copies of one FFN
  // computing exactly that FFN; false is Qwen2-MoE's own routing, the one llama.cpp computes for
  // qwen2moe.
  bool norm_topk_prob = true;
};

// The MoE made from `dense` by convert, its experts as wide as the dense FFN: a Mixtral from llama
// or mistral (mixtral_config), a Qwen2-MoE from qwen2 (its shared expert as wide too), a
// Qwen3-MoE from qwen3; InputError naming `source` for another model type or a top-k outside
// [1, experts].
ModelConfig upcycled_config(const ModelConfig& dense, const MoeShapeOptions& moe, const std::filesystem::path& source);
// The MoE a LoRA-MoE over `dense` computes (MixLoRA's: each expert the dense FFN with its own
// low-rank terms, no shared expert): upcycled_config's Mixtral or Qwen3-MoE, top-k renormalised,
// balanced by `aux_loss_coef` (the adapter's router_aux_loss_coef); InputError for a qwen2 `dense` (its MoE, Qwen2-MoE,
// has a shared expert that a LoRA-MoE has not) and as upcycled_config's.
ModelConfig lora_moe_config(const ModelConfig& dense, int64_t experts, int64_t top_k, double aux_loss_coef,
                            const std::filesystem::path& source);
// The Mixtral config of an MoE made from the dense `dense` (a llama or mistral: Mixtral has no
// attention biases); InputError as upcycled_config's.
ModelConfig mixtral_config(const ModelConfig& dense, int64_t experts, int64_t top_k, double aux_loss_coef,
                           const std::filesystem::path& source);

}  // namespace upcycle
