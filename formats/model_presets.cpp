#include "formats/model_presets.hpp"

namespace upcycle {

using json = nlohmann::ordered_json;

namespace {

json llama(int64_t vocab, int64_t hidden, int64_t inter, int64_t layers, int64_t heads, int64_t kv, bool tied) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", vocab},
          {"hidden_size", hidden},
          {"intermediate_size", inter},
          {"num_hidden_layers", layers},
          {"num_attention_heads", heads},
          {"num_key_value_heads", kv},
          {"max_position_embeddings", 2048},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"hidden_act", "silu"},
          {"initializer_range", 0.02},
          {"tie_word_embeddings", tied},
          {"bos_token_id", 1},
          {"eos_token_id", 2}};
}

// Qwen2.5's and Qwen3's fields over llama's: 151936 tokens, rope theta 1e6, eps 1e-6, tied.
json qwen(const char* type, int64_t hidden, int64_t inter, int64_t layers, int64_t heads, int64_t kv) {
  json j = llama(151936, hidden, inter, layers, heads, kv, true);
  j["architectures"] = {std::string(type) == "qwen2" ? "Qwen2ForCausalLM" : "Qwen3ForCausalLM"};
  j["model_type"] = type;
  j["max_position_embeddings"] = 32768;
  j["rms_norm_eps"] = 1e-6;
  j["rope_theta"] = 1000000.0;
  j["use_sliding_window"] = false;
  j["bos_token_id"] = 151643;
  j["eos_token_id"] = 151645;
  return j;
}

struct Preset {
  const char* name;
  json (*make)();
};

const Preset kPresets[] = {
    // Small enough to train from scratch on two cores in minutes.
    {"tiny", [] { return llama(512, 128, 352, 4, 4, 2, true); }},
    // tiny over the byte tokenizer (init --tokenizer bytes): `upcycle demo`'s model.
    {"demo",
     [] {
       json j = llama(258, 128, 352, 4, 4, 2, true);
       j["max_position_embeddings"] = 256;
       j.erase("bos_token_id");
       j["eos_token_id"] = 257;  // <|im_end|>
       return j;
     }},
    // SmolLM2-135M-Instruct's shape.
    {"smollm2-135m",
     [] {
       json j = llama(49152, 576, 1536, 30, 9, 3, true);
       j["max_position_embeddings"] = 8192;
       j["rope_theta"] = 100000.0;
       j["initializer_range"] = 0.041666666666666664;
       return j;
     }},
    // About 0.56 B parameters, 2.2 GB in f32: the export benchmark's model.
    {"bench-2gb", [] { return llama(32000, 2048, 5632, 9, 16, 8, false); }},
    // About 1.1 B parameters (TinyLlama's shape).
    {"llama-1b", [] { return llama(32000, 2048, 5632, 22, 32, 4, false); }},
    // Qwen2.5-0.5B's shape (0.49 B parameters: q/k/v biases, tied embeddings).
    {"qwen2.5-0.5b", [] { return qwen("qwen2", 896, 4864, 24, 14, 2); }},
    // Qwen3-0.6B's shape (0.6 B parameters: per-head q/k norms, head_dim 128 apart from 1024 / 16).
    {"qwen3-0.6b",
     [] {
       json j = qwen("qwen3", 1024, 3072, 28, 16, 8);
       j["head_dim"] = 128;
       j["attention_bias"] = false;
       return j;
     }},
    // Llama-2-7B's shape (6.7 B parameters, 13.5 GB in bf16): UpIT's LoRA setting.
    {"llama2-7b",
     [] {
       json j = llama(32000, 4096, 11008, 32, 32, 32, false);
       j["max_position_embeddings"] = 4096;
       return j;
     }},
};

}  // namespace

std::optional<json> preset_config(const std::string& name) {
  for (const auto& p : kPresets)
    if (name == p.name) return p.make();
  return std::nullopt;
}

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& p : kPresets) names.emplace_back(p.name);
  return names;
}

}  // namespace upcycle
