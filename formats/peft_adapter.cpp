#include "formats/peft_adapter.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <map>
#include <optional>
#include <string_view>
#include <system_error>
#include <tuple>
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
// MixLoRA's names are the base model's with "mixlora." in place of "model.", an expert's FFN
// term with ".experts.E" after its module, and a router per layer of its own name.
constexpr std::string_view kModelPrefix = "model.";
constexpr std::string_view kMixPrefix = "mixlora.";
constexpr std::string_view kExperts = ".experts.";
constexpr std::string_view kRouterHead = "mixlora.layers.";
constexpr std::string_view kRouterTail = ".mlp.moe_gate.weight";

// The linear layers an adapter may adapt, in the order modules are sorted, with their roles in
// the base model (whose shapes they take), whether MixLoRA makes them each expert's own (the
// FFN's) rather than shared (attention's), and the role of an expert's matrix in its LoRA-MoE.
struct ModuleRow {
  std::string_view name;
  Role role;
  bool per_expert;
  Role expert_role;
};
constexpr ModuleRow kModules[] = {
    {"q_proj", Role::Q, false, Role::Q},
    {"k_proj", Role::K, false, Role::K},
    {"v_proj", Role::V, false, Role::V},
    {"o_proj", Role::O, false, Role::O},
    {"gate_proj", Role::Gate, true, Role::ExpertGate},
    {"up_proj", Role::Up, true, Role::ExpertUp},
    {"down_proj", Role::Down, true, Role::ExpertDown},
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

// A required integer in [lo, hi].
int64_t int_field(const json& j, const char* key, int64_t lo, int64_t hi, const fs::path& file) {
  const json& v = required(j, key, file);
  require_type(v.is_number_integer(), v, key, "an integer", file);
  const int64_t x = v.get<int64_t>();  // one above int64's range wraps below lo: refused too
  require(x >= lo && x <= hi, file,
          std::string("field '") + key + "' = " + v.dump() + " is out of range [" + std::to_string(lo) + ", " +
              std::to_string(hi) + "]");
  return x;
}

// A number that may be absent.
std::optional<double> number_field(const json& j, const char* key, const fs::path& file) {
  const json* v = field(j, key);
  if (!v) return std::nullopt;
  require_type(v->is_number(), *v, key, "a number", file);
  return v->get<double>();
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

// peft_type: LORA, or MIXLORA (true); any other is refused.
bool parse_peft_type(const json& j, const fs::path& file) {
  const json& type = required(j, "peft_type", file);
  require_type(type.is_string(), type, "peft_type", "a string", file);
  require(type == "LORA" || type == "MIXLORA", file,
          "field 'peft_type' is '" + type.get<std::string>() + "': only LORA and MIXLORA adapters are supported");
  return type == "MIXLORA";
}

// The kinds of PEFT config that a plain W + scaling·B·A on our modules cannot express are refused.
void check_supported(const json& j, const fs::path& file) {
  require(!bool_field(j, "use_dora", file), file, "field 'use_dora' is true: DoRA adapters are not supported");
  const std::string bias = string_field(j, "bias", "none", file);
  require(bias == "none", file,
          "field 'bias' is '" + bias + "': only adapters without trained biases (\"none\") are supported");
  require_empty(j, "modules_to_save", "adapters that save whole modules are not supported", file);
  require_empty(j, "rank_pattern", "per-module ranks are not supported", file);
  require_empty(j, "alpha_pattern", "per-module alphas are not supported", file);
}

// MixLoRA's fields: top-k routing over num_experts experts whose FFN terms are silu FFNs like
// the base's. What it can do beyond that (other routers, jitter, experts of their own rank) is
// refused; of the router's training settings the load-balancing coefficient is kept, the others
// only type-checked.
void parse_moe_fields(const json& j, LoraConfig& c, const fs::path& file) {
  const json& routing = required(j, "routing_strategy", file);
  require_type(routing.is_string(), routing, "routing_strategy", "a string", file);
  require(routing == "mixlora", file,
          "field 'routing_strategy' is '" + routing.get<std::string>() +
              "': only MixLoRA's top-k routing (\"mixlora\") is supported");
  c.experts = int_field(j, "num_experts", 1, kMaxLoraExperts, file);
  c.top_k = int_field(j, "top_k", 1, kMaxLoraExperts, file);
  require(c.top_k <= c.experts, file,
          "field 'top_k' = " + std::to_string(c.top_k) + " is above 'num_experts' = " + std::to_string(c.experts));
  const std::string act = string_field(j, "act_fn", "silu", file);  // absent: the base's own, silu
  require(act == "silu", file,
          "field 'act_fn' is '" + act + "': only silu experts (the base's activation) are supported");
  if (const std::optional<double> jitter = number_field(j, "jitter_noise", file))
    require(*jitter == 0, file, "field 'jitter_noise' is " + json(*jitter).dump() + ": router jitter is not supported");
  if (const std::optional<double> coef = number_field(j, "router_aux_loss_coef", file)) {
    require(*coef >= 0 && *coef < 1e3, file, "field 'router_aux_loss_coef' must lie in [0, 1000)");
    c.aux_loss_coef = *coef;
  }
  number_field(j, "router_init_range", file);
  require_empty(j, "expert_lora", "experts with a rank or alpha of their own are not supported", file);
  require(std::any_of(c.target_modules.begin(), c.target_modules.end(),
                      [](const std::string& t) { return kModules[*module_index(t)].per_expert; }),
          file,
          "field 'target_modules' has no FFN module (gate_proj, up_proj, down_proj): no expert would differ from "
          "the base");
}

LoraConfig parse_config(const json& j, const fs::path& file) {
  require(j.is_object(), file, "must be a JSON object");
  const bool moe = parse_peft_type(j, file);
  check_supported(j, file);
  LoraConfig c;
  c.rank = int_field(j, "r", 1, kMaxLoraRank, file);
  const json& alpha = required(j, "lora_alpha", file);
  require_type(alpha.is_number(), alpha, "lora_alpha", "a number", file);
  c.alpha = alpha.get<double>();
  require(std::isfinite(c.alpha) && c.alpha > 0, file,
          "field 'lora_alpha' must be finite and above 0, found " + alpha.dump());
  if (const std::optional<double> d = number_field(j, "lora_dropout", file)) {
    c.dropout = *d;
    require(c.dropout >= 0 && c.dropout < 1, file, "field 'lora_dropout' must be in [0, 1), found " + json(*d).dump());
  }
  c.target_modules = parse_targets(j, file);
  c.use_rslora = bool_field(j, "use_rslora", file);
  c.base_model = string_field(j, "base_model_name_or_path", "", file);
  if (moe) parse_moe_fields(j, c, file);  // a plain LoRA's "num_experts", if any, is not ours
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

// The config against the base: every target must be one of its modules, and a MixLoRA's
// experts sit beside a dense FFN (an MoE's FFN is already its experts).
void check_against_base(const LoraConfig& c, const BaseShapes& shapes, const ModelConfig& base, const fs::path& file) {
  require(!c.is_moe() || !base.is_moe(), file,
          "field 'peft_type' is 'MIXLORA', but the base model (" + base.model_type +
              ") is itself a mixture of experts: MixLoRA adapts a dense model");
  for (const std::string& t : c.target_modules)
    require(shapes[*module_index(t)].has_value(), file,
            "field 'target_modules' names '" + t + "', which a " + base.model_type + " model does not have");
}

// What a tensor name says: PEFT's "base_model.model." + the base weight's name with ".weight"
// replaced by ".lora_A.weight" (or ".lora_A.ADAPTER.weight", as PEFT saves under an adapter name);
// MixLoRA's, see kMixPrefix.
struct LoraName {
  int64_t layer;
  size_t module;
  bool is_b;
  int64_t expert = -1;  // MixLoRA: an expert's FFN term
};

// What follows ".lora_A.": "weight", or "ADAPTER.weight" with one plain adapter name.
bool is_weight_suffix(std::string_view rest) {
  if (rest == kWeightSuffix.substr(1)) return true;
  if (!rest.ends_with(kWeightSuffix)) return false;
  const std::string_view adapter = rest.substr(0, rest.size() - kWeightSuffix.size());
  return !adapter.empty() && adapter.find('.') == std::string_view::npos;
}

// The module of a base weight's name without ".weight" (model.layers.N.self_attn.q_proj).
std::optional<TensorId> parse_module_stem(std::string_view stem) {
  const auto id = parse_tensor_name(std::string(stem) + std::string(kWeightSuffix), Scheme::HF);
  if (!id || !module_of_role(id->role)) return std::nullopt;
  return id;
}

std::optional<LoraName> parse_lora_name(std::string_view name) {
  if (!name.starts_with(kPrefix)) return std::nullopt;
  name.remove_prefix(kPrefix.size());
  for (const bool is_b : {false, true}) {
    const std::string_view marker = is_b ? ".lora_B." : ".lora_A.";
    const size_t at = name.find(marker);
    if (at == std::string_view::npos) continue;
    if (!is_weight_suffix(name.substr(at + marker.size()))) return std::nullopt;
    const auto id = parse_module_stem(name.substr(0, at));
    if (!id) return std::nullopt;
    return LoraName{id->layer, *module_of_role(id->role), is_b};
  }
  return std::nullopt;
}

// model.layers.N.self_attn.q_proj: the base weight's name without ".weight".
std::string module_stem(int64_t layer, size_t module) {
  const std::string weight = tensor_name({kModules[module].role, int(layer)}, Scheme::HF);
  return weight.substr(0, weight.size() - kWeightSuffix.size());
}

std::string ab_suffix(bool is_b) { return (is_b ? ".lora_B" : ".lora_A") + std::string(kWeightSuffix); }

std::string lora_name(const LoraName& n) {
  return std::string(kPrefix) + module_stem(n.layer, n.module) + ab_suffix(n.is_b);
}

std::string moe_name(const LoraName& n) {
  const std::string stem = module_stem(n.layer, n.module).substr(kModelPrefix.size());
  const std::string expert = n.expert >= 0 ? std::string(kExperts) + std::to_string(n.expert) : "";
  return std::string(kMixPrefix) + stem + expert + ab_suffix(n.is_b);
}

std::string router_name(int64_t layer) {
  return std::string(kRouterHead) + std::to_string(layer) + std::string(kRouterTail);
}

// A decimal index, or nullopt; callers compare the name they parsed it from with the one they
// write, which refuses signs and leading zeros.
std::optional<int64_t> parse_index(std::string_view digits) {
  int64_t v = -1;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec != std::errc() || end != digits.data() + digits.size() || v < 0) return std::nullopt;
  return v;
}

std::optional<LoraName> parse_moe_name(std::string_view name) {
  if (!name.starts_with(kMixPrefix)) return std::nullopt;
  for (const bool is_b : {false, true}) {
    const std::string suffix = ab_suffix(is_b);
    if (!name.ends_with(suffix)) continue;
    std::string_view stem = name.substr(kMixPrefix.size(), name.size() - kMixPrefix.size() - suffix.size());
    int64_t expert = -1;
    if (const size_t at = stem.rfind(kExperts); at != std::string_view::npos) {
      const auto e = parse_index(stem.substr(at + kExperts.size()));
      if (!e) return std::nullopt;
      expert = *e;
      stem = stem.substr(0, at);
    }
    const auto id = parse_module_stem(std::string(kModelPrefix) + std::string(stem));
    if (!id) return std::nullopt;
    const LoraName ref{id->layer, *module_of_role(id->role), is_b, expert};
    if (moe_name(ref) != name) return std::nullopt;
    return ref;
  }
  return std::nullopt;
}

// The layer of a MixLoRA router's name.
std::optional<int64_t> parse_router_name(std::string_view name) {
  if (!name.starts_with(kRouterHead) || !name.ends_with(kRouterTail)) return std::nullopt;
  const size_t digits = name.size() - kRouterHead.size() - kRouterTail.size();
  const auto layer = parse_index(name.substr(kRouterHead.size(), digits));
  if (!layer || router_name(*layer) != name) return std::nullopt;
  return layer;
}

// A module's tensor name in the folder's kind.
std::string module_tensor_name(const LoraConfig& c, const LoraName& n) {
  return c.is_moe() ? moe_name(n) : lora_name(n);
}

bool is_plain_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

void check_layer(int64_t layer, const ModelConfig& base, const fs::path& file, const std::string& name) {
  require(layer < base.num_hidden_layers, file, name,
          "layer " + std::to_string(layer) + " is past the base model's " + std::to_string(base.num_hidden_layers) +
              " layers");
}

void check_dtype(const SafetensorsEntry& e, const fs::path& file) {
  require(is_plain_float(e.info.dtype), file, e.info.name,
          "dtype " + std::string(dtype_name(e.info.dtype)) + " is not f32, f16 or bf16");
}

// MixLoRA: its FFN terms are each expert's own, its attention terms shared by all.
void check_expert(const LoraName& ref, const LoraConfig& c, const fs::path& file, const std::string& name) {
  const bool per_expert = kModules[ref.module].per_expert;
  require(!per_expert || ref.expert >= 0, file, name,
          "an FFN module without .experts.E.: in a MIXLORA adapter each expert has its own");
  require(per_expert || ref.expert < 0, file, name,
          "an attention module of one expert: in a MIXLORA adapter attention is shared by every expert");
  require(ref.expert < c.experts, file, name,
          "expert " + std::to_string(ref.expert) + " is past adapter_config.json's num_experts = " +
              std::to_string(c.experts));
}

// One tensor checked against the config and the base: A [r, in], B [out, r].
LoraName check_tensor(const SafetensorsEntry& e, const LoraConfig& c, const BaseShapes& shapes,
                      const ModelConfig& base, const fs::path& file) {
  const std::string& name = e.info.name;
  const auto ref = c.is_moe() ? parse_moe_name(name) : parse_lora_name(name);
  require(ref.has_value(), file, name,
          c.is_moe() ? "not a MixLoRA tensor (expected mixlora.layers.N.self_attn.MODULE.lora_{A,B}.weight, "
                       "mixlora.layers.N.mlp.MODULE.experts.E.lora_{A,B}.weight or "
                       "mixlora.layers.N.mlp.moe_gate.weight)"
                     : "not a LoRA tensor (expected "
                       "base_model.model.model.layers.N.{self_attn,mlp}.MODULE.lora_{A,B}.weight)");
  const std::string_view module = kModules[ref->module].name;
  require(std::find(c.target_modules.begin(), c.target_modules.end(), module) != c.target_modules.end(), file, name,
          "module '" + std::string(module) + "' is not in adapter_config.json's target_modules");
  check_layer(ref->layer, base, file, name);
  if (c.is_moe()) check_expert(*ref, c, file, name);
  check_dtype(e, file);
  const Shape& w = *shapes[ref->module];  // [out, in]; present: the module is a checked target
  const Shape expected = ref->is_b ? Shape{w[0], c.rank} : Shape{c.rank, w[1]};
  require(e.info.shape == expected, file, name,
          "shape " + shape_string(e.info.shape) + ", expected " + shape_string(expected) +
              (ref->is_b ? " ([out, r])" : " ([r, in])"));
  return *ref;
}

// (layer, expert, module) -> A, B: the map's order is the order modules are returned in.
using FoundModules = std::map<std::tuple<int64_t, int64_t, size_t>, std::array<std::optional<Tensor>, 2>>;

// MixLoRA: every expert of every layer has each FFN target (the router may pick any of them).
void check_experts_complete(const FoundModules& found, const LoraConfig& c, const ModelConfig& base,
                            const fs::path& file) {
  for (int64_t layer = 0; layer < base.num_hidden_layers; ++layer)
    for (int64_t expert = 0; expert < c.experts; ++expert)
      for (const std::string& t : c.target_modules) {
        const size_t module = *module_index(t);
        require(!kModules[module].per_expert || found.contains({layer, expert, module}), file,
                moe_name({layer, module, false, expert}),
                "missing: a MIXLORA adapter has each FFN module of target_modules in every expert of every layer");
      }
}

std::vector<LoraModule> read_modules(const SafetensorsFile& st, const LoraConfig& c, const BaseShapes& shapes,
                                     const ModelConfig& base) {
  const fs::path& file = st.path();
  FoundModules found;
  for (const SafetensorsEntry& e : st.entries()) {
    if (c.is_moe() && parse_router_name(e.info.name)) continue;  // read_routers'
    const LoraName ref = check_tensor(e, c, shapes, base, file);
    std::optional<Tensor>& slot = found[{ref.layer, ref.expert, ref.module}][ref.is_b];
    require(!slot.has_value(), file, e.info.name,
            "a second tensor for the same weight (with and without an adapter name?)");
    slot = st.load(e);
  }
  require(!found.empty(), file, "holds no LoRA tensors");
  if (c.is_moe()) check_experts_complete(found, c, base, file);
  std::vector<LoraModule> modules;
  for (auto& [key, ab] : found) {
    const auto [layer, expert, module] = key;
    for (const bool is_b : {false, true})
      require(ab[is_b].has_value(), file, module_tensor_name(c, {layer, module, is_b, expert}),
              std::string("missing: its ") + (is_b ? "lora_A" : "lora_B") + " is present");
    modules.push_back({layer, std::string(kModules[module].name), std::move(*ab[0]), std::move(*ab[1]), expert});
  }
  return modules;
}

// MixLoRA's routers [E, H], one for each layer, in layer order.
std::vector<Tensor> read_routers(const SafetensorsFile& st, const LoraConfig& c, const ModelConfig& base) {
  const fs::path& file = st.path();
  std::vector<std::optional<Tensor>> found(size_t(base.num_hidden_layers));
  for (const SafetensorsEntry& e : st.entries()) {
    const auto layer = parse_router_name(e.info.name);
    if (!layer) continue;
    check_layer(*layer, base, file, e.info.name);
    check_dtype(e, file);
    const Shape expected{c.experts, base.hidden_size};
    require(e.info.shape == expected, file, e.info.name,
            "shape " + shape_string(e.info.shape) + ", expected " + shape_string(expected) +
                " ([num_experts, hidden])");
    found[size_t(*layer)] = st.load(e);  // names are unique in a safetensors header
  }
  std::vector<Tensor> routers;
  for (int64_t layer = 0; layer < base.num_hidden_layers; ++layer) {
    require(found[size_t(layer)].has_value(), file, router_name(layer),
            "missing: a MIXLORA adapter has a router in every layer");
    routers.push_back(std::move(*found[size_t(layer)]));
  }
  return routers;
}

// --- writing ------------------------------------------------------------------------------------

using ordered_json = nlohmann::ordered_json;

// PEFT writes null for no base model name.
ordered_json base_model_json(const LoraConfig& c) {
  return c.base_model.empty() ? ordered_json() : ordered_json(c.base_model);
}

ordered_json peft_config_json(const LoraConfig& c) {
  return {{"peft_type", "LORA"},
          {"task_type", "CAUSAL_LM"},
          {"r", c.rank},
          {"lora_alpha", c.alpha},
          {"target_modules", c.target_modules},
          {"use_rslora", c.use_rslora},
          {"lora_dropout", c.dropout},
          {"bias", "none"},
          {"base_model_name_or_path", base_model_json(c)},
          {"fan_in_fan_out", false},
          {"inference_mode", true},
          {"init_lora_weights", true},
          {"modules_to_save", nullptr},
          {"layers_to_transform", nullptr}};
}

// MixLoRA's: its LoRA fields, then its router's. Its loader checks lora_alpha is an int, so a
// whole alpha is written as one; the load-balancing coefficient is the adapter's, the router's
// other training settings MixLoRA's usual ones, as nothing we read keeps them.
ordered_json mixlora_config_json(const LoraConfig& c) {
  const bool whole = c.alpha == std::trunc(c.alpha) && std::abs(c.alpha) < 0x1p53;
  return {{"peft_type", "MIXLORA"},
          {"task_type", "CAUSAL_LM"},
          {"r", c.rank},
          {"lora_alpha", whole ? ordered_json(int64_t(c.alpha)) : ordered_json(c.alpha)},
          {"lora_dropout", c.dropout},
          {"target_modules", c.target_modules},
          {"use_rslora", c.use_rslora},
          {"bias", "none"},
          {"routing_strategy", "mixlora"},
          {"num_experts", c.experts},
          {"top_k", c.top_k},
          {"act_fn", "silu"},
          {"router_aux_loss_coef", c.aux_loss_coef},
          {"router_init_range", 0.02},
          {"jitter_noise", 0.0},
          {"base_model_name_or_path", base_model_json(c)}};
}

// Modules' A and B, then (MixLoRA) the routers in layer order.
void write_tensors(const LoraAdapter& adapter, const fs::path& path) {
  const LoraConfig& c = adapter.config;
  std::vector<TensorInfo> infos;
  for (const LoraModule& m : adapter.modules)
    for (const bool is_b : {false, true}) {
      const Tensor& t = is_b ? m.b : m.a;
      infos.push_back({module_tensor_name(c, {m.layer, known_module(m.module), is_b, m.expert}), t.dtype(), t.shape()});
    }
  for (size_t layer = 0; layer < adapter.routers.size(); ++layer)
    infos.push_back({router_name(int64_t(layer)), adapter.routers[layer].dtype(), adapter.routers[layer].shape()});
  SafetensorsWriter out(path, std::move(infos));
  for (const LoraModule& m : adapter.modules) {
    out.write(m.a);
    out.write(m.b);
  }
  for (const Tensor& r : adapter.routers) out.write(r);
  out.finish();
}

}  // namespace

Role lora_module_role(const std::string& module) { return kModules[known_module(module)].role; }

bool lora_module_per_expert(const std::string& module) { return kModules[known_module(module)].per_expert; }

TensorId lora_module_tensor(const LoraModule& m) {
  const ModuleRow& row = kModules[known_module(m.module)];
  return m.expert < 0 ? TensorId{row.role, int(m.layer)} : TensorId{row.expert_role, int(m.layer), int(m.expert)};
}

int64_t LoraAdapter::parameter_count() const {
  int64_t n = 0;
  for (const LoraModule& m : modules) n += int64_t(m.a.numel() + m.b.numel());
  for (const Tensor& r : routers) n += int64_t(r.numel());
  return n;
}

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
  return lora_name({layer, known_module(module), is_b});
}

std::string lora_moe_tensor_name(int64_t layer, const std::string& module, int64_t expert, bool is_b) {
  return moe_name({layer, known_module(module), is_b, expert});
}

std::string lora_moe_router_name(int64_t layer) { return router_name(layer); }

bool is_peft_adapter_folder(const fs::path& dir) { return fs::is_regular_file(dir / kConfigFile); }

double LoraConfig::scaling() const {
  return use_rslora ? alpha / std::sqrt(double(rank)) : alpha / double(rank);
}

LoraConfig read_lora_config(const fs::path& dir) {
  const fs::path config_file = dir / kConfigFile;
  require(fs::is_regular_file(config_file), config_file, "missing: not a PEFT adapter folder");
  // A pickle runs code when loaded: never opened, whatever it holds.
  require(fs::exists(dir / kWeightsFile) || !fs::exists(dir / kPickleFile), dir / kPickleFile,
          "the adapter's weights are a pickle file, which is never loaded; save them as " +
              std::string(kWeightsFile) + " (PEFT's save_pretrained(..., safe_serialization=True))");
  return parse_config(read_json_file(config_file, kMaxConfigBytes), config_file);
}

fs::path adapter_weights_file(const fs::path& dir) { return dir / kWeightsFile; }

LoraAdapter read_peft_adapter(const fs::path& dir, const ModelConfig& base) {
  LoraAdapter adapter;
  adapter.config = read_lora_config(dir);
  const BaseShapes shapes = base_shapes(base);
  check_against_base(adapter.config, shapes, base, dir / kConfigFile);
  const SafetensorsFile st = SafetensorsFile::open(dir / kWeightsFile);
  adapter.modules = read_modules(st, adapter.config, shapes, base);
  if (adapter.config.is_moe()) adapter.routers = read_routers(st, adapter.config, base);
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
  const LoraConfig& c = adapter.config;
  write_text_file(dir / kConfigFile, (c.is_moe() ? mixlora_config_json(c) : peft_config_json(c)).dump(2) + "\n");
  write_tensors(adapter, dir / kWeightsFile);
}

}  // namespace upcycle
