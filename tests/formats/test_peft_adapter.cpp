// PEFT LoRA adapter folders: round trips, PEFT's adapter-named tensors, and every malformed or
// unsupported folder refused naming the file and the field or tensor.
#include <doctest/doctest.h>

#include <cmath>
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

void check_config_refusals(const std::vector<ConfigCase>& cases) {
  test::ScratchDir dir;
  const ModelConfig base = test::tiny_config("llama");
  int n = 0;
  for (const ConfigCase& c : cases) {
    json config = valid_config();
    c.change(config);
    const fs::path folder = write_folder(dir, "a" + std::to_string(n++), config, valid_tensors());
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

void check_tensor_refusals(const std::vector<TensorCase>& cases) {
  test::ScratchDir dir;
  const ModelConfig base = test::tiny_config("llama");
  int n = 0;
  for (const TensorCase& c : cases) {
    const fs::path folder = write_folder(dir, "a" + std::to_string(n++), valid_config(), c.tensors);
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
