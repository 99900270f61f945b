// The GGUF writer against our GGUF reader: every family written and read back as the same model
// (q/k rows and stacked experts undone), dtypes converted as stated, the tokenizer carried, bad
// requests refused with nothing written. llama.cpp and the gguf package check the same files
// independently: tests/interop/test_gguf_export.py.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "core/error.hpp"
#include "core/gguf_file.hpp"
#include "core/quant.hpp"
#include "core/tensor_names.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/open_checkpoint.hpp"
#include "tests/common/fixtures.hpp"
#include "text/tokenizer.hpp"

using namespace upcycle;
using namespace upcycle::test;
namespace fs = std::filesystem;

namespace {

WriteOptions quiet(std::optional<DType> dtype = std::nullopt) {
  WriteOptions o;
  o.progress = false;
  o.dtype = dtype;
  return o;
}

// tiny_config's model with hidden 32 (rows of whole Q8_0 blocks, but for the down projections').
ModelConfig config_of(const std::string& type) {
  nlohmann::ordered_json j = tiny_config(type == "qwen2_moe" ? "qwen2" : type).to_json();
  j["hidden_size"] = 32;
  if (type == "qwen2_moe") {
    j["model_type"] = "qwen2_moe";
    j["num_experts"] = 3;
    j["num_experts_per_tok"] = 2;
    j["moe_intermediate_size"] = 12;
    j["shared_expert_intermediate_size"] = 20;
  }
  return ModelConfig::from_json(j, "<test>");
}

// Name -> values of a source checkpoint, as the reader names them: a fused one's (HFFused) in
// Mixtral's per-expert names, its experts split out.
std::map<std::string, std::vector<float>> hf_values(const Checkpoint& c, Scheme scheme = Scheme::HF) {
  std::map<std::string, std::vector<float>> out;
  for (const TensorInfo& t : c.tensors()) {
    std::vector<float> v = tensor_values(c, t.name);
    const auto fused = scheme == Scheme::HFFused ? parse_tensor_name(t.name, scheme) : std::nullopt;
    if (!fused || (fused->role != Role::ExpertsGateUp && fused->role != Role::ExpertsDown)) {
      out[fused ? tensor_name(*fused, Scheme::HF) : t.name] = std::move(v);
      continue;
    }
    const int64_t E = t.shape[0], per = int64_t(v.size()) / E;
    for (int64_t e = 0; e < E; ++e) {
      auto first = v.begin() + e * per;
      const int layer = fused->layer, ex = int(e);
      if (fused->role == Role::ExpertsDown) {
        out[tensor_name({Role::ExpertDown, layer, ex}, Scheme::HF)] = {first, first + per};
      } else {
        out[tensor_name({Role::ExpertGate, layer, ex}, Scheme::HF)] = {first, first + per / 2};
        out[tensor_name({Role::ExpertUp, layer, ex}, Scheme::HF)] = {first + per / 2, first + per};
      }
    }
  }
  return out;
}

std::vector<float> rounded(const std::vector<float>& v, DType t) {
  std::vector<uint16_t> half(v.size());
  std::vector<float> out(v.size());
  convert(DType::F32, v.data(), t, half.data(), v.size());
  convert(t, half.data(), DType::F32, out.data(), v.size());
  return out;
}

std::vector<float> q8_0_round_trip(const std::vector<float>& v) {
  std::vector<std::byte> blocks(v.size() / 32 * 34);
  quantize_q8_0(v.data(), v.size(), blocks.data());
  std::vector<float> out(v.size());
  dequantize(DType::Q8_0, blocks.data(), blocks.size(), out.data(), v.size());
  return out;
}

}  // namespace

TEST_CASE("gguf write: each family reads back as the model written, bit for bit in f32") {
  ScratchDir dir;
  struct Case {
    std::string type, read_as;
    Scheme scheme;
  };
  const Case cases[] = {{"llama", "llama", Scheme::HF},         {"mistral", "llama", Scheme::HF},
                        {"qwen2", "qwen2", Scheme::HF},         {"mixtral", "mixtral", Scheme::HF},
                        {"mixtral", "mixtral", Scheme::HFFused}, {"qwen2_moe", "qwen2_moe", Scheme::Qwen2Moe}};
  for (const Case& c : cases) {
    CAPTURE(c.type);
    CAPTURE(int(c.scheme));
    const auto src = random_checkpoint(config_of(c.type), 3, DType::F32, c.scheme);
    const fs::path path = dir / (c.type + std::to_string(int(c.scheme)) + ".gguf");
    write_checkpoint(*src, path, quiet());
    const auto back = open_checkpoint(path);
    CHECK(back->config().model_type == c.read_as);
    CHECK(back->config().num_local_experts == src->config().num_local_experts);
    const auto want = hf_values(*src, c.scheme);
    REQUIRE(back->tensors().size() == want.size());
    for (const TensorInfo& t : back->tensors()) {
      CAPTURE(t.name);
      REQUIRE(want.count(t.name) == 1);
      CHECK(tensor_values(*back, t.name) == want.at(t.name));
    }
  }
}

TEST_CASE("gguf read: a qwen2moe file from before expert_shared_feed_forward_length takes feed_forward_length") {
  ScratchDir dir;
  auto j = config_of("qwen2_moe").to_json();
  j["shared_expert_intermediate_size"] = j["intermediate_size"];  // what such files held
  const auto src = random_checkpoint(ModelConfig::from_json(j, "<qwen2_moe>"), 4);
  const fs::path path = dir / "old.gguf";
  write_checkpoint(*src, path, quiet());
  // The key renamed in place (the same length): a key this reader does not know.
  std::string bytes = read_file(path);
  const std::string key = "qwen2moe.expert_shared_feed_forward_length";
  const size_t at = bytes.find(key);
  REQUIRE(at != std::string::npos);
  bytes[at + key.find("shared")] = 'S';
  write_file(path, bytes);
  const auto back = open_checkpoint(path);
  CHECK(back->config().shared_expert_intermediate_size == j["intermediate_size"].get<int64_t>());
  CHECK(tensor_values(*back, "model.layers.1.mlp.shared_expert.down_proj.weight") ==
        tensor_values(*src, "model.layers.1.mlp.shared_expert.down_proj.weight"));
}

TEST_CASE("gguf write: matrices in f16, bf16 or Q8_0 as stated, vectors and routers in f32") {
  ScratchDir dir;
  const auto src = random_checkpoint(config_of("mixtral"), 4);
  const auto want = hf_values(*src);
  for (DType dtype : {DType::F16, DType::BF16, DType::Q8_0}) {
    CAPTURE(dtype_name(dtype));
    const fs::path path = dir / (std::string(dtype_name(dtype)) + ".gguf");
    write_checkpoint(*src, path, quiet(dtype));
    const auto back = open_checkpoint(path);
    for (const TensorInfo& t : back->tensors()) {
      CAPTURE(t.name);
      const auto id = *parse_tensor_name(t.name, Scheme::HF);
      const std::vector<float>& v = want.at(t.name);
      DType stored = dtype;
      if (t.shape.size() < 2 || id.role == Role::Router) stored = DType::F32;
      else if (dtype == DType::Q8_0 && t.shape.back() % 32 != 0) stored = DType::F16;  // down: rows of 24
      CHECK(t.stored_dtype() == stored);
      const std::vector<float> expected = stored == DType::F32    ? v
                                          : stored == DType::Q8_0 ? q8_0_round_trip(v)
                                                                  : rounded(v, stored);
      CHECK(tensor_values(*back, t.name) == expected);
    }
  }
}

TEST_CASE("gguf write: the tokenizer goes into the file and encodes as the folder's") {
  ScratchDir dir;
  const fs::path folder = write_chat_model(dir.path(), "llama", 7);
  write_checkpoint(*open_checkpoint(folder), dir / "chat.gguf", quiet());
  const GgufFile file = GgufFile::open(dir / "chat.gguf");
  CHECK(file.metadata().at("tokenizer.ggml.model") == "gpt2");
  CHECK(file.metadata().at("tokenizer.ggml.pre") == "gpt-2");
  CHECK(file.metadata().at("tokenizer.ggml.tokens").size() == size_t(kChatVocab));
  CHECK(file.metadata().contains("tokenizer.chat_template"));
  const std::string text = "<|im_start|>user\nhello, 12 worlds<|im_end|>";
  CHECK(load_tokenizer(dir / "chat.gguf")->encode(text) == load_tokenizer(folder)->encode(text));
}

TEST_CASE("gguf write: Llama 3's rope scaling goes as llama.cpp's rope_freqs and reads back as the config's") {
  ScratchDir dir;
  ModelConfig c = config_of("llama");
  c.head_dim = 64;  // 32 frequencies, a few of them blended
  c.num_attention_heads = 2, c.num_key_value_heads = 1;
  c.rope_theta = 500000;
  c.rope_scaling = {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                    {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  write_checkpoint(*random_checkpoint(c, 2), dir / "llama3.gguf", quiet());
  const GgufFile file = GgufFile::open(dir / "llama3.gguf");
  const auto freqs = std::find_if(file.tensors().begin(), file.tensors().end(),
                                  [](const GgufTensor& t) { return t.name == kGgufRopeFreqs; });
  REQUIRE(freqs != file.tensors().end());
  const std::vector<float> divisors = file.load_raw(*freqs).to_f32_vector();
  CHECK(divisors.front() == 1.0f);  // the shortest wavelength kept, the longest divided by the factor
  CHECK(divisors.back() == 32.0f);
  const auto back = open_checkpoint(dir / "llama3.gguf");
  CHECK(back->config().rope_scaling == c.rope_scaling);  // the same numbers, recovered from the divisors
  CHECK(back->find(std::string(kGgufRopeFreqs)) == nullptr);
  CHECK(back->tensors().size() == random_checkpoint(c, 2)->tensors().size());
}

TEST_CASE("gguf write: a request it cannot honour is refused and nothing is written") {
  ScratchDir dir;
  const auto model = random_checkpoint(config_of("llama"), 1);
  std::vector<TensorInfo> infos = model->tensors();
  infos.push_back({"model.extra.weight", DType::F32, {4, 4}});
  const ComputedCheckpoint extra(model->config(), infos, [&](const TensorInfo& t) {
    return t.name == "model.extra.weight" ? Tensor::zeros(DType::F32, {4, 4}) : model->load(t.name);
  });
  CHECK_THROWS_WITH_AS(write_checkpoint(extra, dir / "extra.gguf", quiet()),
                       doctest::Contains("tensor 'model.extra.weight': has no GGUF name"), InputError);
  CHECK_THROWS_AS(write_checkpoint(*model, dir / "folder", quiet(DType::Q8_0)), InputError);
  for (const auto& entry : fs::directory_iterator(dir.path())) FAIL("left behind: " << entry.path());
}

TEST_CASE("tensor names: GGUF's stacked experts and shared expert") {
  CHECK(tensor_name({Role::ExpertGate, 2, kAllExperts}, Scheme::GGUF) == "blk.2.ffn_gate_exps.weight");
  CHECK(tensor_name({Role::ExpertDown, 0, kAllExperts}, Scheme::GGUF) == "blk.0.ffn_down_exps.weight");
  CHECK(tensor_name({Role::ExpertUp, 1, 3}, Scheme::GGUF) == "blk.1.ffn_up.3.weight");
  CHECK(parse_tensor_name("blk.4.ffn_up_exps.weight", Scheme::GGUF) == TensorId{Role::ExpertUp, 4, kAllExperts});
  CHECK(parse_tensor_name("blk.4.ffn_up.5.weight", Scheme::GGUF) == TensorId{Role::ExpertUp, 4, 5});
  CHECK(parse_tensor_name("blk.1.ffn_gate_inp_shexp.weight", Scheme::GGUF) == TensorId{Role::SharedRouter, 1});
  CHECK_THROWS_AS(tensor_name({Role::ExpertGate, 2, kAllExperts}, Scheme::HF), std::invalid_argument);
}

TEST_CASE("quantize_q8_0: ggml's rounding, the scale from the largest magnitude") {
  std::vector<float> x(64, 0.0f);  // a block of values and a block of zeros
  x[0] = -127.0f;                  // max |x| = 127: d = 1, so x · (1/d) is x exactly
  x[5] = 2.5f, x[6] = -2.5f, x[7] = 2.4f, x[8] = 126.5f;
  std::vector<std::byte> b(68);
  quantize_q8_0(x.data(), x.size(), b.data());
  auto q = [&](int block, int i) { return int(int8_t(b[size_t(block * 34 + 2 + i)])); };
  CHECK(q(0, 0) == -127);
  CHECK(q(0, 5) == 3);  // halves away from zero
  CHECK(q(0, 6) == -3);
  CHECK(q(0, 7) == 2);
  CHECK(q(0, 8) == 127);
  for (int i = 0; i < 32; ++i) CHECK(q(1, i) == 0);
  uint16_t d[2];
  std::memcpy(&d[0], b.data(), 2);
  std::memcpy(&d[1], b.data() + 34, 2);
  CHECK(d[0] == f32_to_f16(1.0f));
  CHECK(d[1] == 0);
}
