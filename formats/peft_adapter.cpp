#include "formats/peft_adapter.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <optional>
#include <string_view>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "core/json_file.hpp"
#include "core/staged_path.hpp"
#include "core/tensor_names.hpp"
#include "formats/safetensors.hpp"

namespace upcycle {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";
constexpr const char* kPickleFile = "adapter_model.bin";
// A config is a few hundred bytes; anything near this is not one.
constexpr uint64_t kMaxConfigBytes = uint64_t(1) << 20;
// PEFT wraps the model twice (PeftModel, then LoraModel), so its names carry this before the
// base model's own.
constexpr std::string_view kPrefix = "base_model.model.";
constexpr std::string_view kWeightSuffix = ".weight";

// The linear layers an adapter may adapt, in the order modules are sorted, with their roles in
// the base model (whose shapes they take).
struct ModuleRow {
  std::string_view name;
  Role role;
};
constexpr ModuleRow kModules[] = {
    {"q_proj", Role::Q},       {"k_proj", Role::K},   {"v_proj", Role::V},       {"o_proj", Role::O},
    {"gate_proj", Role::Gate}, {"up_proj", Role::Up}, {"down_proj", Role::Down},
};
constexpr size_t kModuleCount = std::size(kModules);

std::optional<size_t> module_index(std::string_view name) {
  for (size_t i = 0; i < kModuleCount; ++i)
    if (kModules[i].name == name) return i;
  return std::nullopt;
}

// The index of one of the seven names; std::invalid_argument for any other (a caller's mistake:
// names from files and options are checked before they get here).
size_t known_module(const std::string& module) {
  const auto index = module_index(module);
  if (!index) throw std::invalid_argument("LoRA: unknown module '" + module + "'");
  return *index;
}

std::optional<size_t> module_of_role(Role role) {
  for (size_t i = 0; i < kModuleCount; ++i)
    if (kModules[i].role == role) return i;
  return std::nullopt;
}

// --- adapter_config.json ------------------------------------------------------------------------

// A field that may be absent (or null, which PEFT writes for "unset").
const json* field(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

const json& required(const json& j, const char* key, const fs::path& file) {
  const json* v = field(j, key);
  require(v != nullptr, file, std::string("field '") + key + "' is missing");
  return *v;
}

void require_type(bool ok, const json& v, const char* key, const char* expected, const fs::path& file) {
  require(ok, file, std::string("field '") + key + "' must be " + expected + ", found " + v.type_name());
}

std::string string_field(const json& j, const char* key, const std::string& fallback, const fs::path& file) {
  const json* v = field(j, key);
  if (!v) return fallback;
  require_type(v->is_string(), *v, key, "a string", file);
  return v->get<std::string>();
}

bool bool_field(const json& j, const char* key, const fs::path& file) {
  const json* v = field(j, key);
  if (!v) return false;
  require_type(v->is_boolean(), *v, key, "true or false", file);
  return v->get<bool>();
}

// Fields whose non-empty values change what the adapter computes in ways we do not apply:
// refused rather than silently ignored.
void require_empty(const json& j, const char* key, const std::string& why, const fs::path& file) {
  const json* v = field(j, key);
  require(!v || v->empty(), file, std::string("field '") + key + "' is set: " + why);
}

// target_modules: a list of our seven module names. PEFT also takes one string, a regex over
// module paths, which we refuse rather than emulate Python's regex matching.
std::vector<std::string> parse_targets(const json& j, const fs::path& file) {
  const json& v = required(j, "target_modules", file);
  require(!v.is_string(), file,
          "field 'target_modules' is a string (a regex): only a list of module names is supported");
  require_type(v.is_array(), v, "target_modules", "a list of module names", file);
  require(!v.empty(), file, "field 'target_modules' is an empty list");
  std::vector<std::string> targets;
  for (const json& t : v) {
    require_type(t.is_string(), t, "target_modules", "a list of strings", file);
    const std::string name = t.get<std::string>();
    require(module_index(name).has_value(), file,
            "field 'target_modules' names '" + name +
                "', not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
    targets.push_back(name);
  }
  return targets;
}

// The kinds of PEFT config that a plain W + scaling·B·A on our modules cannot express are refused.
void check_supported(const json& j, const fs::path& file) {
  const json& type = required(j, "peft_type", file);
  require_type(type.is_string(), type, "peft_type", "a string", file);
  require(type == "LORA", file,
          "field 'peft_type' is '" + type.get<std::string>() + "': only LORA adapters are supported");
  require(!bool_field(j, "use_dora", file), file, "field 'use_dora' is true: DoRA adapters are not supported");
  const std::string bias = string_field(j, "bias", "none", file);
  require(bias == "none", file,
          "field 'bias' is '" + bias + "': only adapters without trained biases (\"none\") are supported");
  require_empty(j, "modules_to_save", "adapters that save whole modules are not supported", file);
  require_empty(j, "rank_pattern", "per-module ranks are not supported", file);
  require_empty(j, "alpha_pattern", "per-module alphas are not supported", file);
}

LoraConfig parse_config(const json& j, const fs::path& file) {
  require(j.is_object(), file, "must be a JSON object");
  check_supported(j, file);
  LoraConfig c;
  const json& r = required(j, "r", file);
  require_type(r.is_number_integer(), r, "r", "an integer", file);
  c.rank = r.get<int64_t>();
  require(c.rank >= 1 && c.rank <= kMaxLoraRank, file,
          "field 'r' = " + std::to_string(c.rank) + " is out of range [1, " + std::to_string(kMaxLoraRank) + "]");
  const json& alpha = required(j, "lora_alpha", file);
  require_type(alpha.is_number(), alpha, "lora_alpha", "a number", file);
  c.alpha = alpha.get<double>();
  require(std::isfinite(c.alpha) && c.alpha > 0, file,
          "field 'lora_alpha' must be finite and above 0, found " + alpha.dump());
  if (const json* d = field(j, "lora_dropout")) {
    require_type(d->is_number(), *d, "lora_dropout", "a number", file);
    c.dropout = d->get<double>();
    require(c.dropout >= 0 && c.dropout < 1, file, "field 'lora_dropout' must be in [0, 1), found " + d->dump());
  }
  c.target_modules = parse_targets(j, file);
  c.use_rslora = bool_field(j, "use_rslora", file);
  c.base_model = string_field(j, "base_model_name_or_path", "", file);
  return c;
}

// --- tensors ------------------------------------------------------------------------------------

// Each module's weight shape [out, in] in the base model; nullopt for a module it lacks (a
// mixtral's dense FFN).
using BaseShapes = std::array<std::optional<Shape>, kModuleCount>;

BaseShapes base_shapes(const ModelConfig& base) {
  BaseShapes shapes;
  for (const ExpectedTensor& t : expected_tensors(base))
    if (auto m = module_of_role(t.id.role)) shapes[*m] = t.shape;
  return shapes;
}

void check_targets_exist(const LoraConfig& c, const BaseShapes& shapes, const ModelConfig& base, const fs::path& file) {
  for (const std::string& t : c.target_modules)
    require(shapes[*module_index(t)].has_value(), file,
            "field 'target_modules' names '" + t + "', which a " + base.model_type + " model does not have");
}

// What a tensor name says: PEFT's "base_model.model." + the base weight's name with ".weight"
// replaced by ".lora_A.weight" (or ".lora_A.ADAPTER.weight", as PEFT saves under an adapter name).
struct LoraName {
  int64_t layer;
  size_t module;
  bool is_b;
};

// What follows ".lora_A.": "weight", or "ADAPTER.weight" with one plain adapter name.
bool is_weight_suffix(std::string_view rest) {
  if (rest == kWeightSuffix.substr(1)) return true;
  if (!rest.ends_with(kWeightSuffix)) return false;
  const std::string_view adapter = rest.substr(0, rest.size() - kWeightSuffix.size());
  return !adapter.empty() && adapter.find('.') == std::string_view::npos;
}

std::optional<LoraName> parse_lora_name(std::string_view name) {
  if (!name.starts_with(kPrefix)) return std::nullopt;
  name.remove_prefix(kPrefix.size());
  for (const bool is_b : {false, true}) {
    const std::string_view marker = is_b ? ".lora_B." : ".lora_A.";
    const size_t at = name.find(marker);
    if (at == std::string_view::npos) continue;
    if (!is_weight_suffix(name.substr(at + marker.size()))) return std::nullopt;
    const auto id = parse_tensor_name(std::string(name.substr(0, at)) + std::string(kWeightSuffix), Scheme::HF);
    if (!id) return std::nullopt;
    const auto module = module_of_role(id->role);
    if (!module) return std::nullopt;
    return LoraName{id->layer, *module, is_b};
  }
  return std::nullopt;
}

std::string lora_name(int64_t layer, size_t module, bool is_b) {
  const std::string weight = tensor_name({kModules[module].role, int(layer)}, Scheme::HF);
  const std::string stem = weight.substr(0, weight.size() - kWeightSuffix.size());
  return std::string(kPrefix) + stem + (is_b ? ".lora_B" : ".lora_A") + std::string(kWeightSuffix);
}

bool is_plain_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// One tensor checked against the config and the base: A [r, in], B [out, r].
LoraName check_tensor(const SafetensorsEntry& e, const LoraConfig& c, const BaseShapes& shapes,
                      const ModelConfig& base, const fs::path& file) {
  const std::string& name = e.info.name;
  const auto ref = parse_lora_name(name);
  require(ref.has_value(), file, name,
          "not a LoRA tensor (expected base_model.model.model.layers.N.{self_attn,mlp}.MODULE.lora_{A,B}.weight)");
  const std::string_view module = kModules[ref->module].name;
  require(std::find(c.target_modules.begin(), c.target_modules.end(), module) != c.target_modules.end(), file, name,
          "module '" + std::string(module) + "' is not in adapter_config.json's target_modules");
  require(ref->layer < base.num_hidden_layers, file, name,
          "layer " + std::to_string(ref->layer) + " is past the base model's " +
              std::to_string(base.num_hidden_layers) + " layers");
  require(is_plain_float(e.info.dtype), file, name,
          "dtype " + std::string(dtype_name(e.info.dtype)) + " is not f32, f16 or bf16");
  const Shape& w = *shapes[ref->module];  // [out, in]; present: the module is a checked target
  const Shape expected = ref->is_b ? Shape{w[0], c.rank} : Shape{c.rank, w[1]};
  require(e.info.shape == expected, file, name,
          "shape " + shape_string(e.info.shape) + ", expected " + shape_string(expected) +
              (ref->is_b ? " ([out, r])" : " ([r, in])"));
  return *ref;
}

std::vector<LoraModule> read_modules(const SafetensorsFile& st, const LoraConfig& c, const BaseShapes& shapes,
                                     const ModelConfig& base) {
  const fs::path& file = st.path();
  // (layer, module) -> A, B: the map's order is the order modules are returned in.
  std::map<std::pair<int64_t, size_t>, std::array<std::optional<Tensor>, 2>> found;
  for (const SafetensorsEntry& e : st.entries()) {
    const LoraName ref = check_tensor(e, c, shapes, base, file);
    std::optional<Tensor>& slot = found[{ref.layer, ref.module}][ref.is_b];
    require(!slot.has_value(), file, e.info.name,
            "a second tensor for the same weight (with and without an adapter name?)");
    slot = st.load(e);
  }
  require(!found.empty(), file, "holds no LoRA tensors");
  std::vector<LoraModule> modules;
  for (auto& [key, ab] : found) {
    const auto [layer, module] = key;
    for (const bool is_b : {false, true})
      require(ab[is_b].has_value(), file, lora_name(layer, module, is_b),
              std::string("missing: its ") + (is_b ? "lora_A" : "lora_B") + " is present");
    modules.push_back({layer, std::string(kModules[module].name), std::move(*ab[0]), std::move(*ab[1])});
  }
  return modules;
}

// --- writing ------------------------------------------------------------------------------------

nlohmann::ordered_json config_json(const LoraConfig& c) {
  return {{"peft_type", "LORA"},
          {"task_type", "CAUSAL_LM"},
          {"r", c.rank},
          {"lora_alpha", c.alpha},
          {"target_modules", c.target_modules},
          {"use_rslora", c.use_rslora},
          {"lora_dropout", c.dropout},
          {"bias", "none"},
          {"base_model_name_or_path",  // PEFT writes null for none
           c.base_model.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(c.base_model)},
          {"fan_in_fan_out", false},
          {"inference_mode", true},
          {"init_lora_weights", true},
          {"modules_to_save", nullptr},
          {"layers_to_transform", nullptr}};
}

void write_tensors(const std::vector<LoraModule>& modules, const fs::path& path) {
  std::vector<TensorInfo> infos;
  for (const LoraModule& m : modules) {
    const size_t index = known_module(m.module);
    infos.push_back({lora_name(m.layer, index, false), m.a.dtype(), m.a.shape()});
    infos.push_back({lora_name(m.layer, index, true), m.b.dtype(), m.b.shape()});
  }
  SafetensorsWriter out(path, std::move(infos));
  for (const LoraModule& m : modules) {
    out.write(m.a);
    out.write(m.b);
  }
  out.finish();
}

}  // namespace

Role lora_module_role(const std::string& module) { return kModules[known_module(module)].role; }

const std::vector<std::string>& lora_module_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const ModuleRow& m : kModules) out.emplace_back(m.name);
    return out;
  }();
  return names;
}

std::optional<Shape> lora_module_shape(const ModelConfig& base, const std::string& module) {
  return base_shapes(base)[known_module(module)];
}

std::string lora_tensor_name(int64_t layer, const std::string& module, bool is_b) {
  return lora_name(layer, known_module(module), is_b);
}

bool is_peft_adapter_folder(const fs::path& dir) { return fs::is_regular_file(dir / kConfigFile); }

double LoraConfig::scaling() const {
  return use_rslora ? alpha / std::sqrt(double(rank)) : alpha / double(rank);
}

LoraAdapter read_peft_adapter(const fs::path& dir, const ModelConfig& base) {
  const fs::path config_file = dir / kConfigFile;
  const fs::path weights_file = dir / kWeightsFile;
  require(fs::is_regular_file(config_file), config_file, "missing: not a PEFT adapter folder");
  // A pickle runs code when loaded: never opened, whatever it holds.
  require(fs::exists(weights_file) || !fs::exists(dir / kPickleFile), dir / kPickleFile,
          "the adapter's weights are a pickle file, which is never loaded; save them as " +
              std::string(kWeightsFile) + " (PEFT's save_pretrained(..., safe_serialization=True))");
  LoraAdapter adapter;
  adapter.config = parse_config(read_json_file(config_file, kMaxConfigBytes), config_file);
  const BaseShapes shapes = base_shapes(base);
  check_targets_exist(adapter.config, shapes, base, config_file);
  adapter.modules = read_modules(SafetensorsFile::open(weights_file), adapter.config, shapes, base);
  return adapter;
}

void write_peft_adapter(const LoraAdapter& adapter, const fs::path& dir, bool overwrite) {
  StagedPath staged(dir, overwrite);
  staged.run([&] {
    std::error_code ec;
    fs::create_directory(staged.temp(), ec);
    if (ec) throw InputError(staged.temp(), "cannot create: " + ec.message());
    write_peft_adapter_files(adapter, staged.temp());
  });
  staged.commit();
}

void write_peft_adapter_files(const LoraAdapter& adapter, const fs::path& dir) {
  write_text_file(dir / kConfigFile, config_json(adapter.config).dump(2) + "\n");
  write_tensors(adapter.modules, dir / kWeightsFile);
}

}  // namespace upcycle
