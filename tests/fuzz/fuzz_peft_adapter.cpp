// libFuzzer target for PEFT adapter folders: the input is adapter_config.json, beside a fixed
// valid adapter_model.safetensors (rank 2, layer 0's q_proj and layer 1's v_proj of a tiny llama,
// written once). Any input must either read against that llama, every module's A [r, in] and
// B [out, r] loadable, or be refused with upcycle::InputError. Anything else is a finding.
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

// tests/common's tiny llama (hidden 16, q_dim 16, kv_dim 8, intermediate 24, 2 layers): the
// fuzz targets link no test fixtures.
const upcycle::ModelConfig& base() {
  static const upcycle::ModelConfig config = upcycle::ModelConfig::from_json(
      {{"model_type", "llama"}, {"vocab_size", 40}, {"hidden_size", 16}, {"intermediate_size", 24},
       {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
       {"max_position_embeddings", 64}},
      "<fuzz base>");
  return config;
}

// The folder, with its safetensors file written on the first call.
const std::filesystem::path& adapter_folder() {
  static const std::filesystem::path dir = [] {
    const auto& d = upcycle::fuzz::input_folder();
    using upcycle::DType;
    const std::string q = "base_model.model.model.layers.0.self_attn.q_proj";
    const std::string v = "base_model.model.model.layers.1.self_attn.v_proj";
    const std::vector<upcycle::TensorInfo> tensors = {{q + ".lora_A.weight", DType::F32, {2, 16}},
                                                      {q + ".lora_B.weight", DType::F32, {16, 2}},
                                                      {v + ".lora_A.weight", DType::BF16, {2, 16}},
                                                      {v + ".lora_B.weight", DType::BF16, {8, 2}}};
    upcycle::SafetensorsWriter out(d / "adapter_model.safetensors", tensors);
    for (const auto& t : tensors) out.write(upcycle::Tensor::zeros(t.dtype, t.shape));
    out.finish();
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& dir = adapter_folder();
  upcycle::fuzz::write_file(dir / "adapter_config.json", data, size);
  upcycle::LoraAdapter adapter;
  try {
    adapter = upcycle::read_peft_adapter(dir, base());
  } catch (const upcycle::InputError&) {
    return 0;
  }
  // What was accepted must have the shapes the reader promises, and mapped bytes behind them.
  for (const auto& m : adapter.modules) {
    if (m.a.dim(0) != adapter.config.rank || m.b.dim(1) != adapter.config.rank) std::abort();
    volatile float sink = 0;
    for (float x : m.a.to_f32_vector()) sink = sink + x;
    for (float x : m.b.to_f32_vector()) sink = sink + x;
    (void)sink;
  }
  (void)adapter.config.scaling();
  return 0;
}
