// libFuzzer target for PEFT adapter folders: the input is adapter_config.json, read beside two
// fixed valid adapter_model.safetensors files of a tiny llama (written once): a PEFT LoRA's (rank
// 2, layer 0's q_proj and layer 1's v_proj) and a MixLoRA's (rank 2, 2 experts: layer 0's shared
// q_proj, each layer's and expert's up_proj, each layer's router). Any input must either read
// against that llama, with the shapes the reader promises, or be refused with
// upcycle::InputError. Anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "formats/peft_adapter.hpp"
#include "formats/safetensors.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace {

using upcycle::DType;
using upcycle::TensorInfo;

// tests/common's tiny llama (hidden 16, q_dim 16, kv_dim 8, intermediate 24, 2 layers): the
// fuzz targets link no test fixtures.
constexpr int64_t kHidden = 16;
constexpr int64_t kLayers = 2;
const upcycle::ModelConfig& base() {
  static const upcycle::ModelConfig config = upcycle::ModelConfig::from_json(
      {{"model_type", "llama"}, {"vocab_size", 40}, {"hidden_size", kHidden}, {"intermediate_size", 24},
       {"num_hidden_layers", kLayers}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
       {"max_position_embeddings", 64}},
      "<fuzz base>");
  return config;
}

std::vector<TensorInfo> peft_tensors() {
  const std::string q = "base_model.model.model.layers.0.self_attn.q_proj";
  const std::string v = "base_model.model.model.layers.1.self_attn.v_proj";
  return {{q + ".lora_A.weight", DType::F32, {2, 16}},
          {q + ".lora_B.weight", DType::F32, {16, 2}},
          {v + ".lora_A.weight", DType::BF16, {2, 16}},
          {v + ".lora_B.weight", DType::BF16, {8, 2}}};
}

std::vector<TensorInfo> mixlora_tensors() {
  const std::string q = "mixlora.layers.0.self_attn.q_proj";
  std::vector<TensorInfo> t = {{q + ".lora_A.weight", DType::F32, {2, 16}},
                               {q + ".lora_B.weight", DType::F32, {16, 2}}};
  for (int layer = 0; layer < kLayers; ++layer) {
    const std::string mlp = "mixlora.layers." + std::to_string(layer) + ".mlp.";
    t.push_back({mlp + "moe_gate.weight", layer ? DType::BF16 : DType::F32, {2, kHidden}});
    for (int e = 0; e < 2; ++e) {
      const std::string up = mlp + "up_proj.experts." + std::to_string(e);
      t.push_back({up + ".lora_A.weight", DType::F16, {2, 16}});
      t.push_back({up + ".lora_B.weight", DType::F16, {24, 2}});
    }
  }
  return t;
}

// A folder `name` in the input folder, its safetensors file of zeros written once.
std::filesystem::path adapter_folder(const char* name, const std::vector<TensorInfo>& tensors) {
  const auto dir = upcycle::fuzz::input_folder() / name;
  std::filesystem::create_directories(dir);
  upcycle::SafetensorsWriter out(dir / "adapter_model.safetensors", tensors);
  for (const auto& t : tensors) out.write(upcycle::Tensor::zeros(t.dtype, t.shape));
  out.finish();
  return dir;
}

// What was accepted must have the shapes the reader promises, and mapped bytes behind them.
void check_accepted(const upcycle::LoraAdapter& adapter) {
  const upcycle::LoraConfig& c = adapter.config;
  if (c.is_moe() != !adapter.routers.empty()) std::abort();
  if (c.is_moe()) {
    if (c.top_k < 1 || c.top_k > c.experts || c.experts > upcycle::kMaxLoraExperts) std::abort();
    if (int64_t(adapter.routers.size()) != kLayers) std::abort();
    for (const auto& r : adapter.routers)
      if (r.shape() != upcycle::Shape{c.experts, kHidden}) std::abort();
  }
  for (const auto& m : adapter.modules) {
    if (m.a.dim(0) != c.rank || m.b.dim(1) != c.rank) std::abort();
    const bool ffn = m.module == "gate_proj" || m.module == "up_proj" || m.module == "down_proj";
    const bool per_expert = c.is_moe() && ffn;
    if (per_expert ? m.expert < 0 || m.expert >= c.experts : m.expert != -1) std::abort();
    volatile float sink = 0;
    for (float x : m.a.to_f32_vector()) sink = sink + x;
    for (float x : m.b.to_f32_vector()) sink = sink + x;
    (void)sink;
  }
  (void)c.scaling();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path folders[] = {adapter_folder("peft", peft_tensors()),
                                                  adapter_folder("mixlora", mixlora_tensors())};
  for (const auto& dir : folders) {
    upcycle::fuzz::write_file(dir / "adapter_config.json", data, size);
    try {
      check_accepted(upcycle::read_peft_adapter(dir, base()));
    } catch (const upcycle::InputError&) {
    }
  }
  return 0;
}
