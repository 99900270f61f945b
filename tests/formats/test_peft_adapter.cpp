// PEFT LoRA and MixLoRA adapter folders: round trips, PEFT's adapter-named tensors, MixLoRA's
// names, and every malformed or unsupported folder refused naming the file and the field or tensor.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "formats/peft_adapter.hpp"
#include "formats/safetensors.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// tiny_config("llama"): hidden 16, q_dim 16, kv_dim 8, intermediate 24, 2 layers.
constexpr int64_t kRank = 2;
const std::string kQ0 = "base_model.model.model.layers.0.self_attn.q_proj";
const std::string kV1 = "base_model.model.model.layers.1.self_attn.v_proj";

Tensor random_tensor(Shape shape, DType dtype, uint64_t seed) {
  const uint64_t n = *shape_elements(shape);
  return Tensor::from_f32(std::move(shape), test::random_values(n, seed)).to(dtype);
}

// What PEFT writes for a rank-2 adapter of q_proj and v_proj.
json valid_config() {
  return {{"peft_type", "LORA"},          {"task_type", "CAUSAL_LM"},
          {"r", kRank},                   {"lora_alpha", 16},
          {"target_modules", {"q_proj", "v_proj"}},
          {"lora_dropout", 0.05},         {"bias", "none"},
          {"use_rslora", false},          {"use_dora", false},
          {"modules_to_save", nullptr},   {"base_model_name_or_path", "tiny"},
          {"an_unknown_field", {1, 2}}};
}

// Layer 0's q_proj and layer 1's v_proj: A [r, in], B [out, r], named `suffix` after lora_A/B.
std::vector<TensorInfo> valid_tensors(const std::string& suffix = ".weight") {
  return {{kQ0 + ".lora_A" + suffix, DType::F32, {kRank, 16}},
          {kQ0 + ".lora_B" + suffix, DType::F32, {16, kRank}},
          {kV1 + ".lora_A" + suffix, DType::BF16, {kRank, 16}},
          {kV1 + ".lora_B" + suffix, DType::BF16, {8, kRank}}};
}

// What MixLoRA writes for a rank-2 adapter of 2 experts, top-1, over q_proj, gate_proj and down_proj.
constexpr int64_t kExperts = 2;
json valid_moe_config() {
  return {{"peft_type", "MIXLORA"},        {"task_type", "CAUSAL_LM"},
          {"r", kRank},                    {"lora_alpha", 16},
          {"lora_dropout", 0.05},          {"target_modules", {"q_proj", "gate_proj", "down_proj"}},
          {"bias", "none"},                {"routing_strategy", "mixlora"},
          {"num_experts", kExperts},       {"top_k", 1},
          {"act_fn", "silu"},              {"router_aux_loss_coef", 0.001},
          {"router_init_range", 0.02},     {"jitter_noise", 0.0},
          {"base_model_name_or_path", "tiny"}};
}

const std::string kMixQ0 = "mixlora.layers.0.self_attn.q_proj";
std::string mix_expert(int layer, const std::string& module, int expert) {
  return "mixlora.layers." + std::to_string(layer) + ".mlp." + module + ".experts." + std::to_string(expert);
}
std::string mix_router(int layer) { return "mixlora.layers." + std::to_string(layer) + ".mlp.moe_gate.weight"; }

// Layer 0's shared q_proj (layer 1 has none), each layer's router [E, H] (layer 1's in bf16), and
// each layer's and expert's gate_proj and down_proj.
std::vector<TensorInfo> valid_moe_tensors() {
  std::vector<TensorInfo> t = {{kMixQ0 + ".lora_A.weight", DType::F32, {kRank, 16}},
                               {kMixQ0 + ".lora_B.weight", DType::F32, {16, kRank}}};
  for (int layer = 0; layer < 2; ++layer) {
    t.push_back({mix_router(layer), layer ? DType::BF16 : DType::F32, {kExperts, 16}});
    for (int e = 0; e < kExperts; ++e) {
      t.push_back({mix_expert(layer, "gate_proj", e) + ".lora_A.weight", DType::F32, {kRank, 16}});
      t.push_back({mix_expert(layer, "gate_proj", e) + ".lora_B.weight", DType::F32, {24, kRank}});
      t.push_back({mix_expert(layer, "down_proj", e) + ".lora_A.weight", DType::F16, {kRank, 24}});
      t.push_back({mix_expert(layer, "down_proj", e) + ".lora_B.weight", DType::F16, {16, kRank}});
    }
  }
  return t;
}

// valid_moe_tensors() without the tensor `name` (which it must hold).
std::vector<TensorInfo> moe_without(const std::string& name) {
  auto t = valid_moe_tensors();
  const auto it = std::find_if(t.begin(), t.end(), [&](const TensorInfo& i) { return i.name == name; });
  REQUIRE(it != t.end());
  t.erase(it);
  return t;
}

// valid_moe_tensors() with `info` in place of the tensor of its name, or added.
std::vector<TensorInfo> moe_with(const TensorInfo& info) {
  auto t = valid_moe_tensors();
  const auto it = std::find_if(t.begin(), t.end(), [&](const TensorInfo& i) { return i.name == info.name; });
  if (it == t.end())
    t.push_back(info);
  else
    *it = info;
  return t;
}

// dir/name holding `config` and a safetensors file of `tensors` with random values.
fs::path write_folder(const test::ScratchDir& dir, const std::string& name, const json& config,
                      const std::vector<TensorInfo>& tensors) {
  const fs::path folder = dir / name;
  fs::create_directories(folder);
  test::write_file(folder / "adapter_config.json", config.dump());
  SafetensorsWriter out(folder / "adapter_model.safetensors", tensors);
  uint64_t seed = 1;
  for (const TensorInfo& t : tensors) out.write(random_tensor(t.shape, t.dtype, seed++));
  out.finish();
  return folder;
}

std::string error_of(const fs::path& folder, const ModelConfig& base = test::tiny_config("llama")) {
  try {
    read_peft_adapter(folder, base);
  } catch (const InputError& e) {
    return e.what();
  }
  return "(read without error)";
}

// Each case: a change to the valid config, and what the message must say besides the file name.
struct ConfigCase {
  std::function<void(json&)> change;
  std::string says;
};

// The cases are changes to `valid`, beside `tensors`.
void check_config_refusals(const std::vector<ConfigCase>& cases, const json& valid = valid_config(),
                           const std::vector<TensorInfo>& tensors = valid_tensors()) {
  test::ScratchDir dir;
  const ModelConfig base = test::tiny_config("llama");
  int n = 0;
  for (const ConfigCase& c : cases) {
    json config = valid;
    c.change(config);
    const fs::path folder = write_folder(dir, "a" + std::to_string(n++), config, tensors);
    CAPTURE(config.dump());
    CHECK_THROWS_AS(read_peft_adapter(folder, base), InputError);
    const std::string msg = error_of(folder, base);
    CHECK(msg.find("adapter_config.json") != std::string::npos);
    CHECK_MESSAGE(msg.find(c.says) != std::string::npos, msg);
  }
}

// Each case: the tensors of the folder, and the tensor (or words) the message must name.
struct TensorCase {
  std::vector<TensorInfo> tensors;
  std::string says;
};

// The tensors of each case beside `config`.
void check_tensor_refusals(const std::vector<TensorCase>& cases, const json& config = valid_config()) {
  test::ScratchDir dir;
  const ModelConfig base = test::tiny_config("llama");
  int n = 0;
  for (const TensorCase& c : cases) {
    const fs::path folder = write_folder(dir, "a" + std::to_string(n++), config, c.tensors);
    CAPTURE(c.says);
    CHECK_THROWS_AS(read_peft_adapter(folder, base), InputError);
    const std::string msg = error_of(folder, base);
    CHECK(msg.find("adapter_model.safetensors") != std::string::npos);
    CHECK_MESSAGE(msg.find(c.says) != std::string::npos, msg);
  }
}

}  // namespace

TEST_CASE("peft adapter: a written adapter reads back with the same config and tensor bytes") {
  test::ScratchDir dir;
  const ModelConfig base = test::tiny_config("llama");
  LoraAdapter adapter;
  adapter.config = {.rank = 4,
                    .alpha = 16,
                    .target_modules = {"q_proj", "o_proj", "gate_proj", "down_proj"},
                    .use_rslora = false,
                    .dropout = 0.1,
                    .base_model = "HuggingFaceTB/SmolLM2-135M"};
  // Sorted by layer, then q, k, v, o, gate, up, down; layer 0 has no gate_proj (layers_to_transform).
  adapter.modules = {{0, "q_proj", random_tensor({4, 16}, DType::F32, 1), random_tensor({16, 4}, DType::F32, 2)},
                     {0, "down_proj", random_tensor({4, 24}, DType::F16, 3), random_tensor({16, 4}, DType::F16, 4)},
                     {1, "o_proj", random_tensor({4, 16}, DType::BF16, 5), random_tensor({16, 4}, DType::BF16, 6)},
                     {1, "gate_proj", random_tensor({4, 16}, DType::F32, 7), random_tensor({24, 4}, DType::F32, 8)}};
  write_peft_adapter(adapter, dir / "out", /*overwrite=*/false);

  const LoraAdapter back = read_peft_adapter(dir / "out", base);
  CHECK(back.config.rank == 4);
  CHECK(back.config.alpha == 16);
  CHECK(back.config.target_modules == adapter.config.target_modules);
  CHECK(back.config.use_rslora == false);
  CHECK(back.config.dropout == doctest::Approx(0.1));
  CHECK(back.config.base_model == "HuggingFaceTB/SmolLM2-135M");
  CHECK(back.config.scaling() == doctest::Approx(4.0));  // 16 / 4
  REQUIRE(back.modules.size() == adapter.modules.size());
  for (size_t i = 0; i < back.modules.size(); ++i) {
    CAPTURE(i);
    CHECK(back.modules[i].layer == adapter.modules[i].layer);
    CHECK(back.modules[i].module == adapter.modules[i].module);
    CHECK(test::same_tensor(back.modules[i].a, adapter.modules[i].a));
    CHECK(test::same_tensor(back.modules[i].b, adapter.modules[i].b));
  }
  const json written = json::parse(test::read_file(dir / "out" / "adapter_config.json"));
  CHECK(written["peft_type"] == "LORA");
  CHECK(written["task_type"] == "CAUSAL_LM");
  CHECK(written["bias"] == "none");
  CHECK(written["modules_to_save"].is_null());

  // rsLoRA: alpha / sqrt(r); an empty base model name is written as null and reads back empty.
  adapter.config.use_rslora = true;
  adapter.config.base_model.clear();
  CHECK_THROWS_AS(write_peft_adapter(adapter, dir / "out", /*overwrite=*/false), InputError);
  write_peft_adapter(adapter, dir / "out", /*overwrite=*/true);
  const LoraAdapter rs = read_peft_adapter(dir / "out", base);
  CHECK(rs.config.use_rslora);
  CHECK(rs.config.base_model.empty());
  CHECK(rs.config.scaling() == doctest::Approx(8.0));  // 16 / sqrt(4)
  CHECK(json::parse(test::read_file(dir / "out" / "adapter_config.json"))["base_model_name_or_path"].is_null());
}

TEST_CASE("peft adapter: tensors saved under an adapter name read, stored dtypes kept") {
  test::ScratchDir dir;
  const fs::path folder = write_folder(dir, "a", valid_config(), valid_tensors(".default.weight"));
  const LoraAdapter adapter = read_peft_adapter(folder, test::tiny_config("llama"));
  CHECK(adapter.config.rank == kRank);
  CHECK(adapter.config.dropout == doctest::Approx(0.05));
  CHECK(adapter.config.base_model == "tiny");
  REQUIRE(adapter.modules.size() == 2);
  CHECK(adapter.modules[0].layer == 0);
  CHECK(adapter.modules[0].module == "q_proj");
  CHECK(adapter.modules[0].b.shape() == Shape{16, kRank});
  CHECK(adapter.modules[1].layer == 1);
  CHECK(adapter.modules[1].module == "v_proj");
  CHECK(adapter.modules[1].a.dtype() == DType::BF16);
  CHECK(adapter.modules[1].b.shape() == Shape{8, kRank});
}

TEST_CASE("peft adapter: a missing config, a pickle file and bad JSON are refused naming the file") {
  test::ScratchDir dir;
  fs::create_directories(dir / "empty");
  CHECK_THROWS_AS(read_peft_adapter(dir / "empty", test::tiny_config()), InputError);
  CHECK(error_of(dir / "empty").find("adapter_config.json") != std::string::npos);

  fs::create_directories(dir / "pickle");
  test::write_file(dir / "pickle" / "adapter_config.json", valid_config().dump());
  test::write_file(dir / "pickle" / "adapter_model.bin", "not read");
  CHECK_THROWS_AS(read_peft_adapter(dir / "pickle", test::tiny_config()), InputError);
  const std::string pickle = error_of(dir / "pickle");
  CHECK(pickle.find("adapter_model.bin") != std::string::npos);
  CHECK(pickle.find("pickle") != std::string::npos);

  const fs::path bad = write_folder(dir, "bad", valid_config(), valid_tensors());
  test::write_file(bad / "adapter_config.json", "{\"r\": 8,");
  CHECK_THROWS_AS(read_peft_adapter(bad, test::tiny_config()), InputError);
  const std::string msg = error_of(bad);
  CHECK(msg.find("adapter_config.json") != std::string::npos);
  CHECK(msg.find("not valid JSON") != std::string::npos);
}

TEST_CASE("peft adapter: required config fields missing or of the wrong type are refused naming the field") {
  check_config_refusals({
      {[](json& j) { j = json::array(); }, "must be a JSON object"},
      {[](json& j) { j.erase("peft_type"); }, "'peft_type' is missing"},
      {[](json& j) { j["peft_type"] = 3; }, "'peft_type' must be a string"},
      {[](json& j) { j.erase("r"); }, "'r' is missing"},
      {[](json& j) { j["r"] = "8"; }, "'r' must be an integer"},
      {[](json& j) { j["r"] = 2.5; }, "'r' must be an integer"},
      {[](json& j) { j.erase("lora_alpha"); }, "'lora_alpha' is missing"},
      {[](json& j) { j["lora_alpha"] = "16"; }, "'lora_alpha' must be a number"},
      {[](json& j) { j.erase("target_modules"); }, "'target_modules' is missing"},
      {[](json& j) { j["target_modules"] = 5; }, "'target_modules' must be a list"},
      {[](json& j) { j["target_modules"] = {"q_proj", 1}; }, "'target_modules' must be a list of strings"},
      {[](json& j) { j["target_modules"] = json::array(); }, "'target_modules' is an empty list"},
      {[](json& j) { j["use_rslora"] = "yes"; }, "'use_rslora' must be true or false"},
      {[](json& j) { j["base_model_name_or_path"] = 7; }, "'base_model_name_or_path' must be a string"},
  });
}

TEST_CASE("peft adapter: unsupported PEFT configs and values out of range are refused naming the field") {
  check_config_refusals({
      {[](json& j) { j["target_modules"] = ".*(q|v)_proj"; }, "'target_modules' is a string (a regex): only a list"},
      {[](json& j) { j["peft_type"] = "IA3"; }, "'peft_type' is 'IA3'"},
      {[](json& j) { j["peft_type"] = "ADALORA"; }, "'peft_type' is 'ADALORA'"},
      {[](json& j) { j["use_dora"] = true; }, "'use_dora' is true: DoRA"},
      {[](json& j) { j["bias"] = "all"; }, "'bias' is 'all'"},
      {[](json& j) { j["r"] = 0; }, "'r' = 0 is out of range"},
      {[](json& j) { j["r"] = 4097; }, "'r' = 4097 is out of range"},
      {[](json& j) { j["lora_alpha"] = 0; }, "'lora_alpha' must be finite and above 0"},
      {[](json& j) { j["lora_alpha"] = -1.5; }, "'lora_alpha' must be finite and above 0"},
      {[](json& j) { j["lora_dropout"] = 1.0; }, "'lora_dropout' must be in [0, 1)"},
      {[](json& j) { j["lora_dropout"] = -0.1; }, "'lora_dropout' must be in [0, 1)"},
      {[](json& j) { j["lora_dropout"] = "0.1"; }, "'lora_dropout' must be a number"},
      {[](json& j) { j["modules_to_save"] = {"lm_head"}; }, "'modules_to_save' is set"},
      {[](json& j) { j["rank_pattern"] = {{"q_proj", 4}}; }, "'rank_pattern' is set"},
      {[](json& j) { j["alpha_pattern"] = {{"q_proj", 4}}; }, "'alpha_pattern' is set"},
      {[](json& j) { j["target_modules"] = {"q_proj", "c_attn"}; }, "'c_attn'"},
  });
}

TEST_CASE("peft adapter: a target module the base model lacks is refused naming it") {
  test::ScratchDir dir;
  json config = valid_config();
  config["target_modules"] = {"q_proj", "gate_proj"};
  const fs::path folder = write_folder(dir, "a", config, valid_tensors());
  CHECK_THROWS_AS(read_peft_adapter(folder, test::tiny_config("mixtral")), InputError);
  const std::string msg = error_of(folder, test::tiny_config("mixtral"));
  CHECK(msg.find("adapter_config.json") != std::string::npos);
  CHECK(msg.find("'gate_proj', which a mixtral model does not have") != std::string::npos);
  // The same adapter without gate_proj reads on the mixtral base: its attention is dense.
  config["target_modules"] = {"q_proj", "v_proj"};
  const fs::path attention_only = write_folder(dir, "b", config, valid_tensors());
  CHECK(read_peft_adapter(attention_only, test::tiny_config("mixtral")).modules.size() == 2);
}

TEST_CASE("peft adapter: tensors of other names, layers, shapes or dtypes are refused naming the tensor") {
  const auto with = [](size_t i, TensorInfo t) {
    auto tensors = valid_tensors();
    tensors[i] = std::move(t);
    return tensors;
  };
  const std::string k0 = "base_model.model.model.layers.0.self_attn.k_proj";
  const std::string q2 = "base_model.model.model.layers.2.self_attn.q_proj";
  check_tensor_refusals({
      {with(0, {"base_model.model.lm_head.lora_A.weight", DType::F32, {kRank, 16}}),
       "base_model.model.lm_head.lora_A.weight: not a LoRA tensor"},
      {with(0, {"model.layers.0.self_attn.q_proj.weight", DType::F32, {16, 16}}),
       "model.layers.0.self_attn.q_proj.weight: not a LoRA tensor"},
      {with(0, {kQ0 + ".lora_A.a.b.weight", DType::F32, {kRank, 16}}), kQ0 + ".lora_A.a.b.weight: not a LoRA tensor"},
      {with(0, {kQ0 + ".lora_A.weight", DType::F32, {kRank, 15}}),
       kQ0 + ".lora_A.weight: shape [2, 15], expected [2, 16]"},
      {with(1, {kQ0 + ".lora_B.weight", DType::F32, {16, 3}}), kQ0 + ".lora_B.weight: shape [16, 3], expected [16, 2]"},
      {with(3, {kV1 + ".lora_B.weight", DType::BF16, {16, kRank}}),
       kV1 + ".lora_B.weight: shape [16, 2], expected [8, 2]"},
      {with(0, {kQ0 + ".lora_A.weight", DType::F32, {kRank, 16, 1}}), kQ0 + ".lora_A.weight: shape [2, 16, 1]"},
      {with(0, {kQ0 + ".lora_A.weight", DType::F64, {kRank, 16}}), kQ0 + ".lora_A.weight: dtype f64"},
      {{valid_tensors()[0], valid_tensors()[1], {k0 + ".lora_A.weight", DType::F32, {kRank, 16}}},
       k0 + ".lora_A.weight: module 'k_proj' is not in adapter_config.json's target_modules"},
      {{valid_tensors()[0], valid_tensors()[1], {q2 + ".lora_A.weight", DType::F32, {kRank, 16}}},
       q2 + ".lora_A.weight: layer 2 is past the base model's 2 layers"},
      {{valid_tensors()[0], valid_tensors()[2], valid_tensors()[3]}, kQ0 + ".lora_B.weight: missing"},
      {{valid_tensors()[1], valid_tensors()[2], valid_tensors()[3]}, kQ0 + ".lora_A.weight: missing"},
      {{valid_tensors()[0], valid_tensors()[1], {kQ0 + ".lora_A.default.weight", DType::F32, {kRank, 16}}},
       "a second tensor for the same weight"},
      {{}, "holds no LoRA tensors"},
  });
}

TEST_CASE("peft adapter: a written MixLoRA adapter reads back with the same config, order, routers and bytes") {
  test::ScratchDir dir;
  const ModelConfig base = test::tiny_config("llama");
  LoraAdapter adapter;
  adapter.config = {.rank = 4,
                    .alpha = 8,
                    .target_modules = {"k_proj", "up_proj", "down_proj"},
                    .use_rslora = true,
                    .dropout = 0.1,
                    .base_model = "HuggingFaceTB/SmolLM2-135M",
                    .experts = 3,
                    .top_k = 2};
  // Sorted by layer, then expert (shared first), then module; layer 1 has no k_proj.
  uint64_t seed = 1;
  const auto module = [&](int64_t layer, const std::string& name, int64_t expert, Shape a, Shape b, DType dtype) {
    LoraModule m{layer, name, random_tensor(std::move(a), dtype, seed), random_tensor(std::move(b), dtype, seed + 1),
                 expert};
    seed += 2;
    return m;
  };
  for (int64_t layer = 0; layer < 2; ++layer) {
    if (layer == 0) adapter.modules.push_back(module(0, "k_proj", -1, {4, 16}, {8, 4}, DType::BF16));
    for (int64_t e = 0; e < 3; ++e) {
      adapter.modules.push_back(module(layer, "up_proj", e, {4, 16}, {24, 4}, e == 1 ? DType::F16 : DType::F32));
      adapter.modules.push_back(module(layer, "down_proj", e, {4, 24}, {16, 4}, DType::F32));
    }
  }
  adapter.routers = {random_tensor({3, 16}, DType::F32, 100), random_tensor({3, 16}, DType::BF16, 101)};
  write_peft_adapter(adapter, dir / "out", /*overwrite=*/false);
  CHECK(is_peft_adapter_folder(dir / "out"));

  const LoraAdapter back = read_peft_adapter(dir / "out", base);
  CHECK(back.config.rank == 4);
  CHECK(back.config.alpha == 8);
  CHECK(back.config.target_modules == adapter.config.target_modules);
  CHECK(back.config.use_rslora);
  CHECK(back.config.dropout == doctest::Approx(0.1));
  CHECK(back.config.base_model == "HuggingFaceTB/SmolLM2-135M");
  CHECK(back.config.experts == 3);
  CHECK(back.config.top_k == 2);
  CHECK(back.config.is_moe());
  REQUIRE(back.modules.size() == adapter.modules.size());
  for (size_t i = 0; i < back.modules.size(); ++i) {
    CAPTURE(i);
    CHECK(back.modules[i].layer == adapter.modules[i].layer);
    CHECK(back.modules[i].expert == adapter.modules[i].expert);
    CHECK(back.modules[i].module == adapter.modules[i].module);
    CHECK(test::same_tensor(back.modules[i].a, adapter.modules[i].a));
    CHECK(test::same_tensor(back.modules[i].b, adapter.modules[i].b));
  }
  REQUIRE(back.routers.size() == 2);
  CHECK(test::same_tensor(back.routers[0], adapter.routers[0]));
  CHECK(test::same_tensor(back.routers[1], adapter.routers[1]));

  // MixLoRA's config fields and names, as its loader reads them (lora_alpha a whole number).
  const json written = json::parse(test::read_file(dir / "out" / "adapter_config.json"));
  CHECK(written["peft_type"] == "MIXLORA");
  CHECK(written["task_type"] == "CAUSAL_LM");
  CHECK(written["routing_strategy"] == "mixlora");
  CHECK(written["num_experts"] == 3);
  CHECK(written["top_k"] == 2);
  CHECK(written["act_fn"] == "silu");
  CHECK(written["jitter_noise"] == 0.0);
  CHECK(written["router_aux_loss_coef"] == 0.01);
  CHECK(written["router_init_range"] == 0.02);
  CHECK(written["bias"] == "none");
  CHECK(written["lora_alpha"].is_number_integer());
  CHECK(written["lora_alpha"] == 8);
  const SafetensorsFile st = SafetensorsFile::open(dir / "out" / "adapter_model.safetensors");
  std::vector<std::string> names;
  for (const SafetensorsEntry& e : st.entries()) names.push_back(e.info.name);
  for (const std::string& name :
       {std::string("mixlora.layers.0.self_attn.k_proj.lora_A.weight"), mix_expert(1, "up_proj", 2) + ".lora_B.weight",
        mix_expert(0, "down_proj", 0) + ".lora_A.weight", mix_router(0), mix_router(1)}) {
    CAPTURE(name);
    CHECK(std::find(names.begin(), names.end(), name) != names.end());
  }
  CHECK(names.size() == 2 * adapter.modules.size() + 2);

  // A fractional alpha stays a number and reads back the same.
  adapter.config.alpha = 2.5;
  write_peft_adapter(adapter, dir / "out", /*overwrite=*/true);
  CHECK(read_peft_adapter(dir / "out", base).config.alpha == 2.5);
}

TEST_CASE("peft adapter: MixLoRA's tensor names, and a folder of them in any order read sorted") {
  CHECK(lora_moe_tensor_name(3, "v_proj", -1, false) == "mixlora.layers.3.self_attn.v_proj.lora_A.weight");
  CHECK(lora_moe_tensor_name(0, "gate_proj", 7, true) == "mixlora.layers.0.mlp.gate_proj.experts.7.lora_B.weight");
  CHECK(lora_moe_router_name(12) == "mixlora.layers.12.mlp.moe_gate.weight");

  test::ScratchDir dir;
  auto tensors = valid_moe_tensors();
  std::reverse(tensors.begin(), tensors.end());
  const fs::path folder = write_folder(dir, "a", valid_moe_config(), tensors);
  CHECK(is_peft_adapter_folder(folder));
  const LoraAdapter adapter = read_peft_adapter(folder, test::tiny_config("llama"));
  CHECK(adapter.config.experts == kExperts);
  CHECK(adapter.config.top_k == 1);
  CHECK(adapter.config.rank == kRank);
  CHECK(adapter.config.scaling() == doctest::Approx(8.0));  // 16 / 2
  // Layer 0: q_proj (shared), then expert 0's gate and down, then expert 1's; layer 1 the same
  // without q_proj.
  struct Expected {
    int64_t layer, expert;
    std::string module;
  };
  const std::vector<Expected> order = {{0, -1, "q_proj"},   {0, 0, "gate_proj"}, {0, 0, "down_proj"},
                                       {0, 1, "gate_proj"}, {0, 1, "down_proj"}, {1, 0, "gate_proj"},
                                       {1, 0, "down_proj"}, {1, 1, "gate_proj"}, {1, 1, "down_proj"}};
  REQUIRE(adapter.modules.size() == order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    CAPTURE(i);
    CHECK(adapter.modules[i].layer == order[i].layer);
    CHECK(adapter.modules[i].expert == order[i].expert);
    CHECK(adapter.modules[i].module == order[i].module);
  }
  CHECK(adapter.modules[2].a.dtype() == DType::F16);
  CHECK(adapter.modules[2].a.shape() == Shape{kRank, 24});
  CHECK(adapter.modules[1].b.shape() == Shape{24, kRank});
  REQUIRE(adapter.routers.size() == 2);
  CHECK(adapter.routers[0].shape() == Shape{kExperts, 16});
  CHECK(adapter.routers[0].dtype() == DType::F32);
  CHECK(adapter.routers[1].dtype() == DType::BF16);
  // The values are the file's: the router written first (reversed order) had seed 1.
  const auto router_index = std::find_if(tensors.begin(), tensors.end(),
                                         [](const TensorInfo& t) { return t.name == mix_router(0); }) -
                            tensors.begin();
  CHECK(test::same_tensor(adapter.routers[0], random_tensor({kExperts, 16}, DType::F32, uint64_t(router_index) + 1)));
}

TEST_CASE("peft adapter: MixLoRA's optional fields absent or null read, and a LORA config's num_experts is ignored") {
  test::ScratchDir dir;
  const ModelConfig base = test::tiny_config("llama");
  int n = 0;
  for (const auto& change : std::vector<std::function<void(json&)>>{
           [](json& j) { j.erase("act_fn"), j.erase("jitter_noise"), j.erase("router_aux_loss_coef"),
                         j.erase("router_init_range"); },
           [](json& j) { j["act_fn"] = nullptr, j["jitter_noise"] = nullptr, j["expert_lora"] = json::object(); },
           [](json& j) { j["jitter_noise"] = 0, j["top_k"] = 2; }}) {
    json config = valid_moe_config();
    change(config);
    CAPTURE(config.dump());
    const fs::path folder = write_folder(dir, "m" + std::to_string(n++), config, valid_moe_tensors());
    const LoraAdapter a = read_peft_adapter(folder, base);
    CHECK(a.config.experts == kExperts);
    CHECK(a.routers.size() == 2);
    // The balancing coefficient is the file's (0.001), or MixLoRA's default where it has none.
    CHECK(a.config.aux_loss_coef == (config.contains("router_aux_loss_coef") ? 0.001 : 0.01));
  }
  json config = valid_config();
  config["num_experts"] = 4;
  config["top_k"] = 9;
  config["routing_strategy"] = "switch";
  const LoraAdapter plain = read_peft_adapter(write_folder(dir, "plain", config, valid_tensors()), base);
  CHECK_FALSE(plain.config.is_moe());
  CHECK(plain.config.top_k == 0);
  CHECK(plain.routers.empty());
  for (const LoraModule& m : plain.modules) CHECK(m.expert == -1);
}

TEST_CASE("peft adapter: MixLoRA configs it cannot apply exactly are refused naming the field") {
  check_config_refusals(
      {
          {[](json& j) { j.erase("routing_strategy"); }, "'routing_strategy' is missing"},
          {[](json& j) { j["routing_strategy"] = 3; }, "'routing_strategy' must be a string"},
          {[](json& j) { j["routing_strategy"] = "switch"; }, "'routing_strategy' is 'switch': only MixLoRA's top-k"},
          {[](json& j) { j["routing_strategy"] = "dynamic"; }, "'routing_strategy' is 'dynamic'"},
          {[](json& j) { j["routing_strategy"] = "mixtral"; }, "'routing_strategy' is 'mixtral'"},
          {[](json& j) { j.erase("num_experts"); }, "'num_experts' is missing"},
          {[](json& j) { j["num_experts"] = "2"; }, "'num_experts' must be an integer"},
          {[](json& j) { j["num_experts"] = 2.5; }, "'num_experts' must be an integer"},
          {[](json& j) { j["num_experts"] = 0; }, "'num_experts' = 0 is out of range [1, 256]"},
          {[](json& j) { j["num_experts"] = 257; }, "'num_experts' = 257 is out of range [1, 256]"},
          {[](json& j) { j["num_experts"] = -1; }, "'num_experts' = -1 is out of range"},
          {[](json& j) { j["num_experts"] = 18446744073709551615ull; },
           "'num_experts' = 18446744073709551615 is out of range"},
          {[](json& j) { j.erase("top_k"); }, "'top_k' is missing"},
          {[](json& j) { j["top_k"] = true; }, "'top_k' must be an integer"},
          {[](json& j) { j["top_k"] = 0; }, "'top_k' = 0 is out of range"},
          {[](json& j) { j["top_k"] = 3; }, "'top_k' = 3 is above 'num_experts' = 2"},
          {[](json& j) { j["act_fn"] = "gelu"; }, "'act_fn' is 'gelu': only silu"},
          {[](json& j) { j["act_fn"] = 1; }, "'act_fn' must be a string"},
          {[](json& j) { j["jitter_noise"] = 0.1; }, "'jitter_noise' is 0.1: router jitter is not supported"},
          {[](json& j) { j["jitter_noise"] = "0"; }, "'jitter_noise' must be a number"},
          {[](json& j) { j["router_aux_loss_coef"] = "0.01"; }, "'router_aux_loss_coef' must be a number"},
          {[](json& j) { j["router_aux_loss_coef"] = -0.5; }, "'router_aux_loss_coef' must lie in [0, 1000)"},
          {[](json& j) { j["router_init_range"] = true; }, "'router_init_range' must be a number"},
          {[](json& j) { j["expert_lora"] = {{"r", 4}}; }, "'expert_lora' is set"},
          {[](json& j) { j["target_modules"] = {"q_proj", "v_proj"}; },
           "'target_modules' has no FFN module (gate_proj, up_proj, down_proj): no expert would differ from the base"},
          {[](json& j) { j["peft_type"] = "MIXLORAX"; }, "'peft_type' is 'MIXLORAX'"},
          {[](json& j) { j["use_dora"] = true; }, "'use_dora' is true: DoRA"},
          {[](json& j) { j["r"] = 0; }, "'r' = 0 is out of range"},
          {[](json& j) { j["target_modules"] = {"gate_proj", "fc1"}; }, "'fc1'"},
      },
      valid_moe_config(), valid_moe_tensors());
}

TEST_CASE("peft adapter: MixLoRA on a base that is itself a mixture of experts is refused naming the config") {
  test::ScratchDir dir;
  const fs::path folder = write_folder(dir, "a", valid_moe_config(), valid_moe_tensors());
  CHECK_THROWS_AS(read_peft_adapter(folder, test::tiny_config("mixtral")), InputError);
  const std::string msg = error_of(folder, test::tiny_config("mixtral"));
  CHECK(msg.find("adapter_config.json") != std::string::npos);
  CHECK_MESSAGE(msg.find("'peft_type' is 'MIXLORA', but the base model (mixtral) is itself a mixture of experts") !=
                    std::string::npos,
                msg);
}

TEST_CASE("peft adapter: MixLoRA tensors of other names, experts, layers or shapes, or missing, are refused") {
  const std::string gate00 = mix_expert(0, "gate_proj", 0);
  const std::string down11 = mix_expert(1, "down_proj", 1);
  check_tensor_refusals(
      {
          {moe_with({kQ0 + ".lora_A.weight", DType::F32, {kRank, 16}}), kQ0 + ".lora_A.weight: not a MixLoRA tensor"},
          {moe_with({"mixlora.layers.0.gate.weight", DType::F32, {kExperts, 16}}),
           "mixlora.layers.0.gate.weight: not a MixLoRA tensor"},
          {moe_with({"mixlora.layers.0.experts.0.gate_proj.lora_A.weight", DType::F32, {kRank, 16}}),
           "mixlora.layers.0.experts.0.gate_proj.lora_A.weight: not a MixLoRA tensor"},
          {moe_with({"mixlora.layers.0.mlp.gate_proj.experts.01.lora_A.weight", DType::F32, {kRank, 16}}),
           "mixlora.layers.0.mlp.gate_proj.experts.01.lora_A.weight: not a MixLoRA tensor"},
          {moe_with({"mixlora.layers.00.mlp.moe_gate.weight", DType::F32, {kExperts, 16}}),
           "mixlora.layers.00.mlp.moe_gate.weight: not a MixLoRA tensor"},
          {moe_with({kMixQ0 + ".lora_A.default.weight", DType::F32, {kRank, 16}}),
           kMixQ0 + ".lora_A.default.weight: not a MixLoRA tensor"},
          {moe_with({"mixlora.layers.0.mlp.gate_proj.lora_A.weight", DType::F32, {kRank, 16}}),
           "mixlora.layers.0.mlp.gate_proj.lora_A.weight: an FFN module without .experts.E."},
          {moe_with({kMixQ0 + ".experts.0.lora_A.weight", DType::F32, {kRank, 16}}),
           kMixQ0 + ".experts.0.lora_A.weight: an attention module of one expert"},
          {moe_with({mix_expert(0, "gate_proj", 2) + ".lora_A.weight", DType::F32, {kRank, 16}}),
           mix_expert(0, "gate_proj", 2) + ".lora_A.weight: expert 2 is past adapter_config.json's num_experts = 2"},
          {moe_with({mix_expert(2, "gate_proj", 0) + ".lora_A.weight", DType::F32, {kRank, 16}}),
           mix_expert(2, "gate_proj", 0) + ".lora_A.weight: layer 2 is past the base model's 2 layers"},
          {moe_with({mix_router(2), DType::F32, {kExperts, 16}}),
           mix_router(2) + ": layer 2 is past the base model's 2 layers"},
          {moe_with({mix_expert(0, "up_proj", 0) + ".lora_A.weight", DType::F32, {kRank, 16}}),
           mix_expert(0, "up_proj", 0) +
               ".lora_A.weight: module 'up_proj' is not in adapter_config.json's target_modules"},
          {moe_with({gate00 + ".lora_B.weight", DType::F32, {16, kRank}}),
           gate00 + ".lora_B.weight: shape [16, 2], expected [24, 2]"},
          {moe_with({gate00 + ".lora_A.weight", DType::F64, {kRank, 16}}), gate00 + ".lora_A.weight: dtype f64"},
          {moe_with({mix_router(0), DType::F32, {3, 16}}), mix_router(0) + ": shape [3, 16], expected [2, 16]"},
          {moe_with({mix_router(0), DType::F32, {kExperts, 24}}), mix_router(0) + ": shape [2, 24], expected [2, 16]"},
          {moe_with({mix_router(1), DType::F64, {kExperts, 16}}), mix_router(1) + ": dtype f64"},
          {moe_without(mix_router(1)), mix_router(1) + ": missing"},
          {moe_without(gate00 + ".lora_B.weight"), gate00 + ".lora_B.weight: missing"},
          {moe_without(kMixQ0 + ".lora_A.weight"), kMixQ0 + ".lora_A.weight: missing"},
      },
      valid_moe_config());
  // A whole expert's FFN target missing names its lora_A.
  auto tensors = moe_without(down11 + ".lora_A.weight");
  std::erase_if(tensors, [&](const TensorInfo& t) { return t.name == down11 + ".lora_B.weight"; });
  check_tensor_refusals({{tensors, down11 + ".lora_A.weight: missing: a MIXLORA adapter has each FFN module"}},
                        valid_moe_config());
  // MixLoRA's names in a LORA folder are not PEFT's.
  const TensorInfo mixlora_q{kMixQ0 + ".lora_A.weight", DType::F32, {kRank, 16}};
  check_tensor_refusals(
      {{{valid_tensors()[0], valid_tensors()[1], mixlora_q}, kMixQ0 + ".lora_A.weight: not a LoRA tensor"}});
}

TEST_CASE("peft adapter: a MixLoRA tensor named twice is refused naming the tensor") {
  // The header is written by hand: our writer (and nlohmann's objects) cannot repeat a key.
  test::ScratchDir dir;
  const fs::path folder = write_folder(dir, "a", valid_moe_config(), valid_moe_tensors());
  const fs::path weights = folder / "adapter_model.safetensors";
  std::string bytes = test::read_file(weights);
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  std::string header = bytes.substr(8, header_size);
  // The first router's entry again, under the second one's name: same bytes, a repeated key.
  const json parsed = json::parse(header);
  const std::string copy = "\"" + mix_router(1) + "\":" + parsed[mix_router(0)].dump() + ",";
  header.insert(1, copy);
  header.append((8 - header.size() % 8) % 8, ' ');
  const uint64_t new_size = header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &new_size, 8);
  test::write_file(weights, out + header + bytes.substr(8 + header_size));
  CHECK_THROWS_AS(read_peft_adapter(folder, test::tiny_config("llama")), InputError);
  const std::string msg = error_of(folder);
  CHECK(msg.find("adapter_model.safetensors") != std::string::npos);
  CHECK_MESSAGE(msg.find(mix_router(1)) != std::string::npos, msg);
  CHECK_MESSAGE(msg.find("appears twice") != std::string::npos, msg);
}
