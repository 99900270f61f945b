// dtype conversions, tensor type, config parsing and validation, the name table, staged outputs.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <cstdio>
#include <fstream>
#include <cmath>
#include <map>
#include <set>

#include "core/config.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "core/mapped_file.hpp"
#include "core/progress.hpp"
#include "core/staged_path.hpp"
#include "core/tensor.hpp"
#include "core/tensor_names.hpp"
#include "formats/checkpoint_writer.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using json = nlohmann::ordered_json;

TEST_CASE("bf16 and f16 conversions round to nearest even and keep specials") {
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  // 1 + 2^-8 lies exactly between two bf16 values: ties go to the even one (1.0).
  CHECK(f32_to_bf16(1.00390625f) == 0x3f80);
  CHECK(f32_to_bf16(1.01171875f) == 0x3f82);  // 1 + 3*2^-8: tie, rounds up to even
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(65504.0f) == 0x7bff);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);  // rounds to infinity
  CHECK(f32_to_f16(-2.0f) == 0xc000);
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(f32_to_f16(std::ldexp(1.0f, -24)) == 0x0001);
  CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);  // tie to even (zero)
  CHECK(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  // Every f16 value survives f16 -> f32 -> f16.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaN payloads
    REQUIRE(f32_to_f16(f16_to_f32(uint16_t(h))) == h);
  }
  // convert()'s vectorised bf16 loops give each element's scalar result: every bf16 value back
  // and forth, and f32 values around every rounding case (ties both ways, NaNs, infinities).
  std::vector<uint16_t> all(0x10000);
  for (uint32_t b = 0; b < 0x10000; ++b) all[b] = uint16_t(b);
  std::vector<float> wide(0x10000);
  convert(DType::BF16, all.data(), DType::F32, wide.data(), all.size());
  for (uint32_t b = 0; b < 0x10000; ++b) REQUIRE(std::bit_cast<uint32_t>(wide[b]) == uint32_t(b) << 16);
  std::vector<float> f32;
  std::vector<uint32_t> highs = {0x7f7f, 0x7f80, 0x7f81, 0x7fc0, 0xff80, 0xffff, 0x0000, 0x8000};  // max, inf, NaNs, zeros
  for (uint32_t b = 0; b < 0x10000; b += 7) highs.push_back(b);
  for (uint32_t b : highs)
    for (uint32_t low : {0x0000u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) f32.push_back(std::bit_cast<float>(b << 16 | low));
  std::vector<uint16_t> narrow(f32.size());
  convert(DType::F32, f32.data(), DType::BF16, narrow.data(), f32.size());
  for (size_t i = 0; i < f32.size(); ++i) REQUIRE(narrow[i] == f32_to_bf16(f32[i]));
}

TEST_CASE("tensor conversions and sizes") {
  Tensor t = Tensor::from_f32({2, 3}, {1, -2, 3.5f, 0.25f, -0.125f, 7});
  CHECK(t.nbytes() == 24);
  Tensor b = t.to(DType::BF16);
  CHECK(b.nbytes() == 12);
  CHECK(b.to_f32_vector() == t.to_f32_vector());  // all exactly representable
  CHECK(t.to(DType::F32).bytes().data() == t.bytes().data());  // same dtype shares bytes
  CHECK_THROWS_AS(Tensor::zeros(DType::F32, {-1, 2}), std::invalid_argument);
  CHECK_THROWS_AS(Tensor::zeros(DType::Q8_0, {33}), std::invalid_argument);  // not whole blocks
  CHECK_FALSE(shape_elements({int64_t(1) << 40, int64_t(1) << 40}).has_value());
  CHECK_FALSE(dtype_bytes(DType::F32, uint64_t(1) << 63).has_value());
}

TEST_CASE("tensor ranges: computed tensors are made a range at a time, quantized ones by whole blocks") {
  // A computed tensor whose element i is i / 8, counting the elements it is asked for.
  auto asked = std::make_shared<uint64_t>(0);
  const Tensor c = Tensor::computed({10, 100}, [asked](uint64_t first, std::span<float> out) {
    *asked += out.size();
    for (size_t j = 0; j < out.size(); ++j) out[j] = float(first + j) / 8;
  });
  CHECK(c.is_computed());
  std::vector<float> part(7);
  c.to_f32_range(993, part);
  CHECK(part[0] == 993.0f / 8);
  CHECK(part[6] == 999.0f / 8);
  CHECK(*asked == 7);
  CHECK_THROWS_AS(c.to_f32_range(995, part), std::out_of_range);
  // A writer streams it in pieces, converted, without making it whole.
  std::vector<uint16_t> written;
  uint64_t pieces = 0;
  write_converted(c, DType::BF16, [&](std::span<const std::byte> bytes, uint64_t first) {
    CHECK(first == written.size());
    const auto* h = reinterpret_cast<const uint16_t*>(bytes.data());
    written.insert(written.end(), h, h + bytes.size() / 2);
    ++pieces;
  }, /*at=*/0, /*max_bytes=*/256);
  CHECK(pieces == 16);  // 64 f32 values a piece
  REQUIRE(written.size() == 1000);
  for (size_t i = 0; i < written.size(); ++i) REQUIRE(written[i] == f32_to_bf16(float(i) / 8));
  CHECK(*asked == 1007);
  // Its bytes are made once, whole.
  CHECK(c.span<float>()[999] == 999.0f / 8);
  CHECK(c.bytes().size() == 4000);
  CHECK(*asked == 2007);
  CHECK(c.reshaped({1000}).span<float>()[5] == 5.0f / 8);
  CHECK(*asked == 2007);

  // Q8_0: blocks of 32 (an f16 scale, 32 int8); ranges of whole blocks only.
  Tensor q = Tensor::zeros(DType::Q8_0, {96});
  std::span<std::byte> raw = q.mutable_bytes();
  for (size_t b = 0; b < 3; ++b) {
    raw[b * 34] = std::byte{0x00}, raw[b * 34 + 1] = std::byte{0x3c};  // d = 1
    for (size_t i = 0; i < 32; ++i) raw[b * 34 + 2 + i] = std::byte(uint8_t(b * 32 + i));
  }
  const std::vector<float> all = q.to_f32_vector();
  std::vector<float> tail(64);
  q.to_f32_range(32, tail);
  CHECK(std::equal(tail.begin(), tail.end(), all.begin() + 32));
  CHECK(tail[63] == 95.0f);
  std::vector<float> bad(32);
  CHECK_THROWS_AS(q.to_f32_range(16, bad), std::invalid_argument);
  CHECK_THROWS_AS(q.to_f32_range(0, std::span(bad).first(20)), std::invalid_argument);
  CHECK(range_block(1000, std::span(&q, 1)) == 1024);
  CHECK(range_block(7, {}) == 7);
  q.release(0, 96);  // not a file map: nothing dropped
  CHECK(q.to_f32_vector() == all);
}

namespace {

// This process's resident bytes of the mapping that holds p (/proc/self/smaps' Rss).
uint64_t resident_bytes_at(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(p);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2) {  // a mapping's first line
      inside = lo <= at && at < hi;
    } else if (inside && line.rfind("Rss:", 0) == 0) {
      return std::stoull(line.substr(4)) * 1024;
    }
  }
  return 0;
}

}  // namespace

TEST_CASE("tensor: a part of a file map is a file map, and release() drops its pages from this process") {
  test::ScratchDir dir;
  const uint64_t bytes = 16 << 20;  // two release chunks
  {
    std::ofstream out(dir / "w.bin", std::ios::binary);
    std::vector<char> ones(bytes, 1);
    out.write(ones.data(), std::streamsize(bytes));
  }
  const auto file = ReadOnlyFile::open(dir / "w.bin");
  const Tensor whole = Tensor::view(DType::F32, {int64_t(bytes / 4)}, file->map(0, bytes));
  const Tensor half = whole.part(bytes / 2, {int64_t(bytes / 8)});
  CHECK(half.bytes().data() == whole.bytes().data() + bytes / 2);
  CHECK_THROWS_AS(whole.part(bytes / 2 + 4, {int64_t(bytes / 8)}), std::out_of_range);
  uint64_t sum = 0;
  for (std::byte b : whole.bytes()) sum += uint64_t(b);  // every page touched
  CHECK(sum == bytes);
  CHECK(resident_bytes_at(whole.bytes().data()) >= bytes);
  half.release(0, half.numel());
  const uint64_t after = resident_bytes_at(whole.bytes().data());
  CHECK(after <= bytes / 2);
  CHECK(after >= bytes / 2 - 4096);
  // A part of owned bytes is borrowed: release() leaves them.
  Tensor owned = Tensor::zeros(DType::F32, {16});
  owned.mutable_bytes()[4] = std::byte{7};
  Tensor tail = owned.part(4, {15});
  tail.release(0, 15);
  CHECK(tail.bytes()[0] == std::byte{7});
  CHECK_THROWS_AS(tail.mutable_bytes(), std::logic_error);
}

TEST_CASE("config: qwen3_moe is Mixtral's routing with Qwen's fields, and what it cannot compute is refused") {
  json j = test::tiny_config("qwen3").to_json();
  j["model_type"] = "qwen3_moe";
  j["num_experts"] = 6;
  j["num_experts_per_tok"] = 2;
  j["moe_intermediate_size"] = 12;
  j["norm_topk_prob"] = true;
  const ModelConfig c = ModelConfig::from_json(j, "q");
  CHECK(c.num_local_experts == 6);
  CHECK(c.expert_intermediate_size() == 12);
  CHECK(c.qk_norm());
  CHECK(ModelConfig::from_json(c.to_json(), "again").to_json() == c.to_json());
  CHECK(c.norm_topk_prob);
  const std::pair<const char*, json> refused[] = {{"decoder_sparse_step", 2}, {"mlp_only_layers", json::array({0})}};
  for (const auto& [key, value] : refused) {
    CAPTURE(key);
    json bad = j;
    bad[key] = value;
    CHECK_THROWS_WITH_AS(ModelConfig::from_json(bad, "q"), doctest::Contains(key), InputError);
  }
  j.erase("norm_topk_prob");  // transformers' default: the top-k weights as they are
  const ModelConfig unnormalised = ModelConfig::from_json(j, "q");
  CHECK_FALSE(unnormalised.norm_topk_prob);
  CHECK(unnormalised.to_json()["norm_topk_prob"] == false);
}

TEST_CASE("config: qwen2_moe has a shared expert as wide as its config says, and Qwen's routing by default") {
  json j = test::tiny_config("qwen2_moe").to_json();
  const ModelConfig c = ModelConfig::from_json(j, "q");
  CHECK(c.has_shared_expert());
  CHECK(c.shared_expert_intermediate_size == 20);
  CHECK_FALSE(c.norm_topk_prob);
  CHECK(ModelConfig::from_json(c.to_json(), "again").to_json() == c.to_json());
  for (const json& bad_size : {json(0), json(nullptr)}) {
    json bad = j;
    bad["shared_expert_intermediate_size"] = bad_size;
    if (bad_size.is_null()) bad.erase("shared_expert_intermediate_size");
    CHECK_THROWS_WITH_AS(ModelConfig::from_json(bad, "q"), doctest::Contains("shared_expert_intermediate_size"),
                         InputError);
  }
  json sparse_step = j;
  sparse_step["decoder_sparse_step"] = 2;
  CHECK_THROWS_WITH_AS(ModelConfig::from_json(sparse_step, "q"), doctest::Contains("decoder_sparse_step"), InputError);
}

TEST_CASE("config: parsing, defaults, validation and unknown fields carried through") {
  ModelConfig c = test::tiny_config("llama");
  CHECK(c.head_dim == 4);
  CHECK(c.to_json()["an_unknown_field"]["kept"] == true);
  ModelConfig back = ModelConfig::from_json(c.to_json(), "x");
  CHECK(back.to_json() == c.to_json());

  auto bad = [](const std::function<void(json&)>& edit, const char* needle) {
    json j = test::tiny_config("llama").to_json();
    edit(j);
    try {
      ModelConfig::from_json(j, "cfg.json");
      FAIL("accepted a bad config: " << needle);
    } catch (const InputError& e) {
      CHECK_MESSAGE(std::string(e.what()).find(needle) != std::string::npos, std::string(e.what()));
      CHECK(std::string(e.what()).rfind("cfg.json: ", 0) == 0);
    }
  };
  bad([](json& j) { j["hidden_size"] = -16; }, "hidden_size");
  bad([](json& j) { j["hidden_size"] = "16"; }, "must be an integer");
  bad([](json& j) { j["num_key_value_heads"] = 3; }, "num_key_value_heads");
  bad([](json& j) { j["num_attention_heads"] = 5; j["num_key_value_heads"] = 1; }, "must divide hidden_size");
  bad([](json& j) { j["vocab_size"] = int64_t(1) << 40; }, "vocab_size");
  bad([](json& j) { j["model_type"] = "gpt_neox"; }, "not supported");
  bad([](json& j) { j.erase("num_hidden_layers"); }, "num_hidden_layers' is missing");
  bad([](json& j) { j["rms_norm_eps"] = 0; }, "rms_norm_eps");
  bad([](json& j) { j["model_type"] = "mixtral"; j["num_experts_per_tok"] = 9; j["num_local_experts"] = 4; },
      "num_experts_per_tok");
  // Fields that change the computation are refused, not misread (issue 25): another activation,
  // an unknown or out-of-range rope scaling, at the config's parse (so inspect and convert too).
  bad([](json& j) { j["hidden_act"] = "gelu"; }, "'hidden_act' = 'gelu' is not supported");
  bad([](json& j) { j["rope_scaling"] = {{"type", "weird"}, {"factor", 2.0}}; }, "type 'weird' is not supported");
  bad([](json& j) { j["rope_scaling"] = {{"type", "linear"}, {"factor", -3.0}}; }, "'factor' must be positive");
  bad([](json& j) { j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0}}; },
      "'high_freq_factor' must exceed");
  for (const char* act : {"silu", "swish"}) {
    json ok = test::tiny_config("llama").to_json();
    ok["hidden_act"] = act;
    CHECK_NOTHROW(ModelConfig::from_json(ok, "x"));
  }

  json j = test::tiny_config("llama").to_json();
  j["head_dim"] = 8;  // explicit head_dim lifts the divisibility rule
  j["num_attention_heads"] = 3;
  j["num_key_value_heads"] = 1;
  CHECK(ModelConfig::from_json(j, "x").q_dim() == 24);

  ModelConfig q = test::tiny_config("qwen2");
  CHECK(q.attention_bias);
  // Qwen2's window covers the layers from max_window_layers on: all, none, or (refused) some.
  auto qwen_window = [](std::optional<int> from) {
    json w = test::tiny_config("qwen2").to_json();
    w["use_sliding_window"] = true;
    w["sliding_window"] = 16;
    if (from) w["max_window_layers"] = *from;
    return ModelConfig::from_json(w, "cfg.json").sliding_window;
  };
  CHECK(qwen_window(std::nullopt) == 16);
  CHECK(qwen_window(0) == 16);
  CHECK(qwen_window(2) == std::nullopt);  // the tiny config's 2 layers all attend in full
  CHECK_THROWS_WITH_AS(qwen_window(1), doctest::Contains("a sliding window in only some of the 2 layers"), InputError);
  ModelConfig m = test::tiny_config("mixtral");
  CHECK(m.is_moe());
  CHECK(m.num_local_experts == 4);
}

// A name holds an index for each level of its role's scope (the role table's) and no other.
TEST_CASE("name table: every name parses back to its role and the indices of its scope, in every scheme") {
  for (Scheme s : {Scheme::HF, Scheme::HFFused, Scheme::Qwen2Moe, Scheme::GGUF}) {
    for (const RoleInfo& info : kRoleInfos) {
      if (!has_name(info.role, s)) continue;
      const std::string name = tensor_name({info.role, 3, 11}, s);  // leaves out the indices the role lacks
      CAPTURE(name);
      const TensorId id{info.role, info.scope == Scope::Model ? -1 : 3, info.scope == Scope::Expert ? 11 : -1};
      CHECK(parse_tensor_name(name, s) == std::optional(id));
      if (info.scope != Scope::Model) CHECK_THROWS_AS(tensor_name({info.role, -1, 11}, s), std::invalid_argument);
      if (info.scope == Scope::Expert && s != Scheme::GGUF)
        CHECK_THROWS_AS(tensor_name({info.role, 3, kAllExperts}, s), std::invalid_argument);
      if (info.scope == Scope::Expert && s == Scheme::GGUF)  // GGUF alone names the experts stacked
        CHECK(parse_tensor_name(tensor_name({info.role, 3, kAllExperts}, s), s) ==
              std::optional(TensorId{info.role, 3, kAllExperts}));
    }
  }
  CHECK(tensor_name({Role::ExpertGate, 2, 5}, Scheme::HF) == "model.layers.2.block_sparse_moe.experts.5.w1.weight");
  CHECK(tensor_name({Role::Q, 0}, Scheme::GGUF) == "blk.0.attn_q.weight");
  CHECK_FALSE(parse_tensor_name("model.layers.01.mlp.up_proj.weight", Scheme::HF).has_value());
  CHECK_FALSE(parse_tensor_name("model.layers.x.mlp.up_proj.weight", Scheme::HF).has_value());
  CHECK_FALSE(has_name(Role::ExpertGate, Scheme::HFFused));

  std::vector<std::string> names = {"lm_head.weight", "model.layers.10.mlp.up_proj.weight", "model.norm.weight",
                                    "model.layers.2.input_layernorm.weight", "model.embed_tokens.weight", "zzz"};
  std::vector<std::string> sorted;
  for (size_t i : canonical_order(names)) sorted.push_back(names[i]);
  CHECK(sorted == std::vector<std::string>{"model.embed_tokens.weight", "model.layers.2.input_layernorm.weight",
                                           "model.layers.10.mlp.up_proj.weight", "model.norm.weight",
                                           "lm_head.weight", "zzz"});
}

// The role table's kind and freeze part against what the Hugging Face names say.
TEST_CASE("role table: kind and part agree with the names") {
  for (Scheme s : {Scheme::HF, Scheme::HFFused, Scheme::Qwen2Moe}) {
    for (const RoleInfo& info : kRoleInfos) {
      if (!has_name(info.role, s)) continue;
      const std::string name = tensor_name({info.role, 1, 2}, s);
      CAPTURE(name);
      const bool norm = name.find("norm") != std::string::npos, bias = name.ends_with(".bias");
      CHECK(info.kind == (norm ? TensorKind::Norm : bias ? TensorKind::Bias : TensorKind::Weight));
      Part part = Part::Experts;
      if (name.find("embed_tokens") != std::string::npos || name == "lm_head.weight") part = Part::Embeddings;
      else if (norm) part = Part::Norms;
      else if (name.find("self_attn") != std::string::npos) part = Part::Attention;
      else if (name.ends_with(".gate.weight")) part = Part::Router;
      CHECK(info.part == part);
    }
  }
}

// A dense model's tensors are the roles that are their own dense counterpart; GGUF names an
// expert's tensor as its counterpart's with the expert's index added, and a shared expert's with
// _shexp; other roles have none.
TEST_CASE("role table: dense counterparts") {
  std::set<Role> dense, own;
  for (const char* type : {"qwen2", "qwen3"})  // biases, per-head norms
    for (const auto& e : expected_tensors(test::tiny_config(type))) dense.insert(e.id.role);
  for (const RoleInfo& info : kRoleInfos)
    if (info.dense == info.role) own.insert(info.role);
  CHECK(dense == own);
  for (const RoleInfo& info : kRoleInfos) {
    CAPTURE(int(info.role));
    if (info.scope != Scope::Expert && info.dense != info.role && info.dense) {
      // The shared expert's: GGUF names it as the FFN with _shexp added.
      std::string name = tensor_name({info.role, 1}, Scheme::GGUF);  // blk.1.ffn_up_shexp.weight
      REQUIRE(name.find("_shexp") != std::string::npos);
      name.erase(name.find("_shexp"), 6);
      CHECK(name == tensor_name({*info.dense, 1}, Scheme::GGUF));
      continue;
    }
    if (info.scope != Scope::Expert) continue;
    REQUIRE(info.dense.has_value());
    std::string name = tensor_name({info.role, 1, 2}, Scheme::GGUF);  // blk.1.ffn_up.2.weight
    name.erase(name.find(".2."), 2);
    CHECK(name == tensor_name({*info.dense, 1}, Scheme::GGUF));
  }
}

TEST_CASE("role table: shapes from the config's sizes") {
  // V 40, H 16, I 24, nH*D 4*8 = 32, nKV*D 8; qwen2_moe: 3 experts of I 12, a shared one of I 20.
  json j = test::tiny_config("qwen2").to_json();
  j["head_dim"] = 8;
  j["num_key_value_heads"] = 1;
  std::map<Role, Shape> shape;
  auto add = [&](const json& config, Scheme s) {
    for (const auto& e : expected_tensors(ModelConfig::from_json(config, "x"), s)) shape[e.id.role] = e.shape;
  };
  add(j, Scheme::HF);
  j["model_type"] = "qwen2_moe";
  j["num_experts"] = 3;
  j["num_experts_per_tok"] = 2;
  j["moe_intermediate_size"] = 12;
  j["shared_expert_intermediate_size"] = 20;
  add(j, Scheme::Qwen2Moe);
  j["model_type"] = "mixtral";
  j["num_local_experts"] = 3;
  for (const char* key : {"num_experts", "moe_intermediate_size", "shared_expert_intermediate_size"}) j.erase(key);
  add(j, Scheme::HFFused);
  const std::map<Role, Shape> want = {
      {Role::TokenEmbedding, {40, 16}}, {Role::AttnNorm, {16}},       {Role::Q, {32, 16}},
      {Role::K, {8, 16}},               {Role::V, {8, 16}},           {Role::O, {16, 32}},
      {Role::QBias, {32}},              {Role::KBias, {8}},           {Role::VBias, {8}},
      {Role::FfnNorm, {16}},            {Role::Gate, {24, 16}},       {Role::Up, {24, 16}},
      {Role::Down, {16, 24}},           {Role::Router, {3, 16}},      {Role::ExpertGate, {12, 16}},
      {Role::ExpertUp, {12, 16}},       {Role::ExpertDown, {16, 12}}, {Role::ExpertsGateUp, {3, 48, 16}},
      {Role::ExpertsDown, {3, 16, 24}}, {Role::SharedGate, {20, 16}}, {Role::SharedUp, {20, 16}},
      {Role::SharedDown, {16, 20}},     {Role::SharedRouter, {1, 16}}, {Role::FinalNorm, {16}},
      {Role::LmHead, {40, 16}}};
  CHECK(shape == want);
}

TEST_CASE("layout: the tensors a config implies") {
  auto dense = expected_tensors(test::tiny_config("llama", /*tied=*/true));
  CHECK(dense.size() == 1 + 2 * 9 + 1);  // embed, 9 per layer, final norm; tied: no head
  auto moe = expected_tensors(test::tiny_config("mixtral"));
  CHECK(moe.size() == 1 + 2 * (6 + 1 + 4 * 3) + 2);
  auto fused = expected_tensors(test::tiny_config("mixtral"), Scheme::HFFused);
  CHECK(fused.size() == 1 + 2 * (6 + 1 + 2) + 2);
  auto qwen = expected_tensors(test::tiny_config("qwen2"));
  CHECK(qwen.size() == 1 + 2 * 12 + 2);
}

TEST_CASE("staged outputs appear only when committed") {
  test::ScratchDir dir;
  {
    StagedPath staged(dir / "out", false);
    std::filesystem::create_directories(staged.temp());
    test::write_file(staged.temp() / "a", "x");
    CHECK_FALSE(std::filesystem::exists(dir / "out"));
  }  // abandoned: removed
  CHECK(std::filesystem::is_empty(dir.path()));
  {
    StagedPath staged(dir / "out", false);
    std::filesystem::create_directories(staged.temp());
    staged.commit();
  }
  CHECK(std::filesystem::is_directory(dir / "out"));
  CHECK_THROWS_AS(StagedPath(dir / "out", false), InputError);
  CHECK_THROWS_AS(StagedPath(dir / "missing" / "out", false), InputError);
  StagedPath again(dir / "out", true);
  test::write_file(again.temp(), "file replaces folder");
  again.commit();
  CHECK(test::read_file(dir / "out") == "file replaces folder");
}

TEST_CASE("a staged output removes the staging entries of writers that no longer run") {
  test::ScratchDir dir;
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  REQUIRE(child > 0);
  ::waitpid(child, nullptr, 0);  // a pid that ran and ended
  const std::string dead = std::to_string(child), alive = std::to_string(::getppid());
  char host[256] = {};
  REQUIRE(::gethostname(host, sizeof host - 1) == 0);
  const std::vector<std::string> stale = {".step-000004.partial-" + dead, ".final.partial-" + dead + ".old",
                                          ".init.partial-" + dead + "@" + host};
  // Another machine's process ids say nothing here (a folder shared over NFS): its entries stay.
  const std::vector<std::string> kept = {".step-000008.partial-" + alive, "step.partial-" + dead,
                                         ".x.partial-" + dead + "a", "plain", ".test.jsonl.partial-" + dead + "@other-machine",
                                         ".final.partial-" + dead + "@other-machine.old"};
  for (const auto& name : stale) std::filesystem::create_directories(dir / name / "inner");
  for (const auto& name : kept) test::write_file(dir / name, "x");
  { StagedPath staged(dir / "out", false); }
  for (const auto& name : stale) CHECK_MESSAGE(!std::filesystem::exists(dir / name), name);
  for (const auto& name : kept) CHECK_MESSAGE(std::filesystem::exists(dir / name), name);
}

TEST_CASE("durations read as a person writes them, huge ones without overflow") {
  CHECK(format_duration(5.25) == "5.2s");
  CHECK(format_duration(65) == "1m05s");
  CHECK(format_duration(7260) == "2h01m");
  CHECK(format_duration(1e7) == "2777h46m");
  CHECK(format_duration(1e13) == "over 1000 days");  // --epochs 1e12 printed a negative ETA
  CHECK(format_duration(-1) == "?");
}
