#include "core/config.hpp"

#include <cmath>
#include <fstream>
#include <limits>
#include <numbers>
#include <stdexcept>

#include "core/error.hpp"

namespace upcycle {

using json = nlohmann::ordered_json;

namespace {

// Sane upper bounds: anything larger is a corrupt or hostile file, not a model.
constexpr int64_t kMaxVocab = int64_t(1) << 23;
constexpr int64_t kMaxHidden = int64_t(1) << 17;
constexpr int64_t kMaxIntermediate = int64_t(1) << 20;
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxExperts = 4096;
constexpr int64_t kMaxPositions = int64_t(1) << 26;

// A field that may be absent (or null, which Hugging Face writes for "unset").
const json* field(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

int64_t get_int(const json& j, const char* key, std::optional<int64_t> fallback,
                const std::filesystem::path& src) {
  const json* v = field(j, key);
  if (!v) {
    require(fallback.has_value(), src, std::string("field '") + key + "' is missing");
    return *fallback;
  }
  require(v->is_number_integer(), src, std::string("field '") + key + "' must be an integer, found " +
                                          std::string(v->type_name()));
  return v->get<int64_t>();
}

double get_double(const json& j, const char* key, double fallback, const std::filesystem::path& src) {
  const json* v = field(j, key);
  if (!v) return fallback;
  require(v->is_number(), src, std::string("field '") + key + "' must be a number, found " +
                                  std::string(v->type_name()));
  return v->get<double>();
}

bool get_bool(const json& j, const char* key, bool fallback, const std::filesystem::path& src) {
  const json* v = field(j, key);
  if (!v) return fallback;
  require(v->is_boolean(), src, std::string("field '") + key + "' must be true or false, found " +
                                   std::string(v->type_name()));
  return v->get<bool>();
}

void check_range(int64_t value, int64_t lo, int64_t hi, const char* name, const std::filesystem::path& src) {
  require(value >= lo && value <= hi, src,
          std::string("field '") + name + "' = " + std::to_string(value) + " is out of range [" +
              std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

bool known_type(const std::string& t) {
  return t == "llama" || t == "mistral" || t == "qwen2" || t == "qwen3" || t == "mixtral" || t == "qwen2_moe" ||
         t == "qwen3_moe";
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::filesystem::path& src) {
  require(j.is_object(), src, "config must be a JSON object");
  const json* mt = field(j, "model_type");
  require(mt && mt->is_string(), src, "field 'model_type' is missing or not a string");
  ModelConfig c;
  c.raw = j;
  c.model_type = mt->get<std::string>();
  require(known_type(c.model_type), src,
          "model_type '" + c.model_type +
              "' is not supported (llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe)");

  c.vocab_size = get_int(j, "vocab_size", std::nullopt, src);
  c.hidden_size = get_int(j, "hidden_size", std::nullopt, src);
  c.intermediate_size = get_int(j, "intermediate_size", std::nullopt, src);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", std::nullopt, src);
  c.num_attention_heads = get_int(j, "num_attention_heads", std::nullopt, src);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", c.num_attention_heads, src);
  check_range(c.num_attention_heads, 1, kMaxHeads, "num_attention_heads", src);
  c.head_dim = get_int(j, "head_dim", c.hidden_size / c.num_attention_heads, src);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", 2048, src);
  c.rms_norm_eps = get_double(j, "rms_norm_eps", 1e-6, src);
  c.rope_theta = get_double(j, "rope_theta", 10000.0, src);
  if (const json* rs = field(j, "rope_scaling")) {
    require(rs->is_object(), src, "field 'rope_scaling' must be an object or null");
    c.rope_scaling = *rs;
    parse_rope_scaling(c.rope_scaling, src);  // refused here, so inspect and convert refuse it too
  }
  // The FFNs compute SwiGLU: a config asking for another activation is refused, not misread.
  if (const json* act = field(j, "hidden_act")) {
    require(act->is_string(), src, "field 'hidden_act' must be a string");
    const std::string name = act->get<std::string>();
    require(name == "silu" || name == "swish", src,
            "field 'hidden_act' = '" + name + "' is not supported (silu; the FFNs compute SwiGLU)");
  }
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, src);
  const bool qwen2 = c.model_type == "qwen2" || c.model_type == "qwen2_moe";
  const bool qwen = qwen2 || c.qk_norm();  // qwen3 and qwen3_moe: the same sliding-window fields
  c.attention_bias = qwen2 || get_bool(j, "attention_bias", false, src);
  require(!get_bool(j, "mlp_bias", false, src), src, "field 'mlp_bias' = true is not supported");

  // Sliding window: mistral uses it whenever set; qwen2 only with use_sliding_window.
  if (c.model_type == "mistral" || c.model_type == "mixtral" ||
      (qwen && get_bool(j, "use_sliding_window", false, src))) {
    if (field(j, "sliding_window")) c.sliding_window = get_int(j, "sliding_window", std::nullopt, src);
    else if (c.model_type == "mistral" && !j.contains("sliding_window")) c.sliding_window = 4096;  // transformers' default
  }
  // Qwen2 slides only in the layers from max_window_layers on: from 0 is every layer (what the
  // attention computes), past the last is none; a mix is refused, not computed as every layer.
  if (qwen && c.sliding_window && field(j, "max_window_layers")) {
    const int64_t from = get_int(j, "max_window_layers", std::nullopt, src);
    if (from >= c.num_hidden_layers) c.sliding_window.reset();
    else
      require(from <= 0, src,
              "field 'max_window_layers' = " + std::to_string(from) + ": a sliding window in only some of the " +
                  std::to_string(c.num_hidden_layers) + " layers is not supported");
  }

  if (c.model_type == "mixtral") {
    c.num_local_experts = get_int(j, "num_local_experts", 8, src);
    c.num_experts_per_tok = get_int(j, "num_experts_per_tok", 2, src);
    c.router_aux_loss_coef = get_double(j, "router_aux_loss_coef", 0.001, src);  // transformers' default
  } else if (c.model_type == "qwen2_moe" || c.model_type == "qwen3_moe") {
    const bool qwen2_moe = c.model_type == "qwen2_moe";
    c.num_local_experts = get_int(j, "num_experts", qwen2_moe ? 60 : 128, src);  // transformers' defaults
    c.num_experts_per_tok = get_int(j, "num_experts_per_tok", qwen2_moe ? 4 : 8, src);
    c.router_aux_loss_coef = get_double(j, "router_aux_loss_coef", 0.001, src);
    c.moe_intermediate_size = get_int(j, "moe_intermediate_size", std::nullopt, src);
    c.norm_topk_prob = get_bool(j, "norm_topk_prob", false, src);
    if (qwen2_moe)
      c.shared_expert_intermediate_size = get_int(j, "shared_expert_intermediate_size", std::nullopt, src);
    // The MoE computed here has experts in every layer.
    require(get_int(j, "decoder_sparse_step", 1, src) == 1, src,
            "field 'decoder_sparse_step' other than 1 (dense layers among the MoE ones) is not supported");
    const json* dense_layers = field(j, "mlp_only_layers");
    require(!dense_layers || (dense_layers->is_array() && dense_layers->empty()), src,
            "field 'mlp_only_layers' other than [] (dense layers among the MoE ones) is not supported");
  }
  c.validate(src);
  return c;
}

void ModelConfig::validate(const std::filesystem::path& src) const {
  check_range(vocab_size, 1, kMaxVocab, "vocab_size", src);
  check_range(hidden_size, 1, kMaxHidden, "hidden_size", src);
  check_range(intermediate_size, 1, kMaxIntermediate, "intermediate_size", src);
  check_range(num_hidden_layers, 1, kMaxLayers, "num_hidden_layers", src);
  check_range(num_attention_heads, 1, kMaxHeads, "num_attention_heads", src);
  check_range(num_key_value_heads, 1, num_attention_heads, "num_key_value_heads", src);
  check_range(head_dim, 1, kMaxHeadDim, "head_dim", src);
  check_range(max_position_embeddings, 1, kMaxPositions, "max_position_embeddings", src);
  require(num_attention_heads % num_key_value_heads == 0, src,
          "num_key_value_heads (" + std::to_string(num_key_value_heads) + ") must divide num_attention_heads (" +
              std::to_string(num_attention_heads) + ")");
  if (!raw.contains("head_dim") || raw["head_dim"].is_null())
    require(hidden_size % num_attention_heads == 0, src,
            "num_attention_heads (" + std::to_string(num_attention_heads) + ") must divide hidden_size (" +
                std::to_string(hidden_size) + ") when head_dim is not given");
  require(head_dim % 2 == 0, src, "head_dim (" + std::to_string(head_dim) + ") must be even for rotary embeddings");
  require(rms_norm_eps > 0 && rms_norm_eps < 1, src, "field 'rms_norm_eps' must lie in (0, 1)");
  require(rope_theta > 0 && rope_theta < 1e12, src, "field 'rope_theta' must lie in (0, 1e12)");
  if (sliding_window) check_range(*sliding_window, 1, kMaxPositions, "sliding_window", src);
  if (is_moe() || model_type == "mixtral" || model_type == "qwen2_moe") {
    check_range(num_local_experts, 1, kMaxExperts, "num_local_experts", src);
    check_range(num_experts_per_tok, 1, num_local_experts, "num_experts_per_tok", src);
    require(router_aux_loss_coef >= 0 && router_aux_loss_coef < 1e3, src,
            "field 'router_aux_loss_coef' must lie in [0, 1000)");
  }
  if (model_type == "qwen2_moe" || model_type == "qwen3_moe")
    check_range(moe_intermediate_size, 1, kMaxIntermediate, "moe_intermediate_size", src);
  if (model_type == "qwen2_moe") {
    check_range(shared_expert_intermediate_size, 1, kMaxIntermediate, "shared_expert_intermediate_size", src);
  }
}

ModelConfig ModelConfig::load(const std::filesystem::path& path) {
  std::ifstream in(path);
  require(bool(in), path, "cannot open config");
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  require(!j.is_discarded(), path, "not valid JSON");
  return from_json(j, path);
}

json ModelConfig::to_json() const {
  json j = raw.is_object() ? raw : json::object();
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  if (j.contains("head_dim") || head_dim * num_attention_heads != hidden_size) j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (!rope_scaling.is_null()) j["rope_scaling"] = rope_scaling;
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (model_type != "qwen2" && model_type != "qwen2_moe" && (attention_bias || j.contains("attention_bias")))
    j["attention_bias"] = attention_bias;
  if (sliding_window) j["sliding_window"] = *sliding_window;
  if (model_type == "mixtral") {
    j["num_local_experts"] = num_local_experts;
    j["num_experts_per_tok"] = num_experts_per_tok;
    j["router_aux_loss_coef"] = router_aux_loss_coef;
  } else if (model_type == "qwen2_moe" || model_type == "qwen3_moe") {
    j["num_experts"] = num_local_experts;
    j["num_experts_per_tok"] = num_experts_per_tok;
    j["router_aux_loss_coef"] = router_aux_loss_coef;
    j["moe_intermediate_size"] = moe_intermediate_size;
    j["norm_topk_prob"] = norm_topk_prob;
    if (model_type == "qwen2_moe") j["shared_expert_intermediate_size"] = shared_expert_intermediate_size;
  }
  return j;
}

RopeScaling parse_rope_scaling(const nlohmann::ordered_json& j, const std::filesystem::path& source) {
  RopeScaling s;
  if (j.is_null()) return s;
  auto number = [&](const char* key, double fallback) {
    if (!j.contains(key)) return fallback;
    require(j[key].is_number(), source, "rope_scaling", std::string("'") + key + "' must be a number");
    return j[key].get<double>();
  };
  const char* type_key = j.contains("rope_type") ? "rope_type" : "type";
  require(j.contains(type_key) && j[type_key].is_string(), source, "rope_scaling", "no 'rope_type' string");
  const std::string type = j[type_key].get<std::string>();
  if (type == "default") return s;
  s.factor = number("factor", s.factor);
  require(s.factor > 0, source, "rope_scaling", "'factor' must be positive");
  if (type == "linear") {
    s.type = RopeScaling::Type::Linear;
    return s;
  }
  require(type == "llama3", source, "rope_scaling", "type '" + type + "' is not supported (default, linear, llama3)");
  s.type = RopeScaling::Type::Llama3;
  s.low_freq_factor = number("low_freq_factor", s.low_freq_factor);
  s.high_freq_factor = number("high_freq_factor", s.high_freq_factor);
  s.original_max_position_embeddings = number("original_max_position_embeddings", s.original_max_position_embeddings);
  require(s.high_freq_factor > s.low_freq_factor, source, "rope_scaling", "'high_freq_factor' must exceed 'low_freq_factor'");
  return s;
}

double llama3_smooth(double f, const RopeScaling& s) {
  const double wavelen = 2 * std::numbers::pi / f;
  if (wavelen < s.original_max_position_embeddings / s.high_freq_factor) return 1;
  if (wavelen > s.original_max_position_embeddings / s.low_freq_factor) return 0;
  return (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
}

std::vector<float> rope_inv_freq(int64_t head_dim, double theta, const RopeScaling& scaling) {
  if (head_dim <= 0 || head_dim % 2 != 0) throw std::invalid_argument("rope: head_dim must be even");
  std::vector<float> inv_freq(size_t(head_dim / 2));
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    // theta ** (arange(0, D, 2).float() / D), each step in fp32 as torch does it.
    const float exponent = float(2 * i) / float(head_dim);
    const float base_pow = float(std::pow(double(float(theta)), double(exponent)));
    const float f = 1.0f / base_pow;
    switch (scaling.type) {
      case RopeScaling::Type::Default:
        inv_freq[size_t(i)] = f;
        break;
      case RopeScaling::Type::Linear:
        inv_freq[size_t(i)] = f / float(scaling.factor);
        break;
      case RopeScaling::Type::Llama3: {  // in double here, in fp32 there
        const double smooth = llama3_smooth(f, scaling);
        inv_freq[size_t(i)] = float((1 - smooth) * f / scaling.factor + smooth * f);
        break;
      }
    }
  }
  return inv_freq;
}

namespace {

void check_top_k(int64_t top_k, int64_t experts, const std::filesystem::path& source) {
  require(top_k >= 1 && top_k <= experts, source,
          "top-k " + std::to_string(top_k) + " must lie in [1, " + std::to_string(experts) + " experts]");
}

}  // namespace

ModelConfig upcycled_config(const ModelConfig& dense, const MoeShapeOptions& moe, const std::filesystem::path& source) {
  if (dense.model_type != "qwen2" && dense.model_type != "qwen3")
    return mixtral_config(dense, moe.experts, moe.top_k, moe.aux_loss_coef, source);
  check_top_k(moe.top_k, moe.experts, source);
  const bool qwen2 = dense.model_type == "qwen2";
  json j = dense.to_json();
  j["model_type"] = qwen2 ? "qwen2_moe" : "qwen3_moe";
  j["architectures"] = {qwen2 ? "Qwen2MoeForCausalLM" : "Qwen3MoeForCausalLM"};
  j["num_experts"] = moe.experts;
  j["num_experts_per_tok"] = moe.top_k;
  j["moe_intermediate_size"] = dense.intermediate_size;
  if (qwen2) j["shared_expert_intermediate_size"] = dense.intermediate_size;
  j["norm_topk_prob"] = moe.norm_topk_prob;
  j["decoder_sparse_step"] = 1;
  j["mlp_only_layers"] = json::array();
  j["router_aux_loss_coef"] = moe.aux_loss_coef;
  return ModelConfig::from_json(j, source);
}

ModelConfig lora_moe_config(const ModelConfig& dense, int64_t experts, int64_t top_k, double aux_loss_coef,
                            const std::filesystem::path& source) {
  require(dense.model_type != "qwen2", source,
          "is a qwen2 model: its MoE, a Qwen2-MoE, has a shared expert, which a LoRA-MoE (MixLoRA) has not; a LoRA-MoE "
          "is made over llama, mistral (a Mixtral) or qwen3 (a Qwen3-MoE)");
  return upcycled_config(dense, {experts, top_k, aux_loss_coef, true}, source);
}

ModelConfig mixtral_config(const ModelConfig& dense, int64_t experts, int64_t top_k, double aux_loss_coef,
                           const std::filesystem::path& source) {
  require(dense.model_type == "llama" || dense.model_type == "mistral", source,
          "is a " + dense.model_type +
              " model: a Mixtral is made of llama or mistral models (it has no attention biases); qwen2 models make a "
              "Qwen2-MoE, qwen3 ones a Qwen3-MoE");
  check_top_k(top_k, experts, source);
  json j = dense.to_json();
  j["model_type"] = "mixtral";
  j["architectures"] = {"MixtralForCausalLM"};
  j["num_local_experts"] = experts;
  j["num_experts_per_tok"] = top_k;
  j["router_aux_loss_coef"] = aux_loss_coef;
  j.erase("mlp_bias");
  return ModelConfig::from_json(j, source);
}

}  // namespace upcycle
