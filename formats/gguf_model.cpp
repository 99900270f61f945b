// The llama-family view of a GGUF model: the Hugging Face config its metadata implies, and a
// Checkpoint with Hugging Face names and row layout (q/k permutation undone, quantized tensors
// dequantized).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <unordered_map>

#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "core/quant.hpp"
#include "core/tensor_names.hpp"
#include "formats/gguf_model.hpp"
#include "text/tokenizer_export.hpp"

namespace upcycle {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Config

namespace {

// The architectures whose GGUF files map onto Hugging Face configs and tensor names.
struct Arch {
  std::string_view gguf;        // general.architecture, also the prefix of its keys
  std::string_view model_type;  // Hugging Face's, for the dense model
  std::string_view hf_class;
  bool rope_interleaved;  // llama.cpp's converter permuted the q/k rows (see hf_row)
};
constexpr Arch kArchs[] = {
    {"llama", "llama", "LlamaForCausalLM", true},  // with experts: Mixtral
    {"mistral", "mistral", "MistralForCausalLM", true},
    {"qwen2", "qwen2", "Qwen2ForCausalLM", false},
    {"qwen2moe", "qwen2_moe", "Qwen2MoeForCausalLM", false},
    {"qwen3", "qwen3", "Qwen3ForCausalLM", false},
    {"qwen3moe", "qwen3_moe", "Qwen3MoeForCausalLM", false},
};

const Arch& arch_of(const GgufFile& f) {
  const std::string name = f.architecture();
  require(!name.empty(), f.path(), "key 'general.architecture'", "missing or not a string");
  for (const Arch& a : kArchs)
    if (a.gguf == name) return a;
  throw InputError(f.path(), "key 'general.architecture'",
                   "'" + name + "' is not supported (llama, mistral, qwen2, qwen2moe, qwen3, qwen3moe)");
}

// Typed metadata lookups; a key of the wrong type is an error naming it.
class Meta {
 public:
  explicit Meta(const GgufFile& f) : f_(f) {}
  const fs::path& path() const { return f_.path(); }

  std::optional<int64_t> integer(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    require(v->is_number_integer(), f_.path(), "key '" + key + "'",
            std::string("must be an integer, found ") + v->type_name());
    require(!v->is_number_unsigned() || v->get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()),
            f_.path(), "key '" + key + "'", "value " + v->dump() + " is out of range");
    return v->get<int64_t>();
  }
  int64_t required_integer(const std::string& key) const {
    auto v = integer(key);
    require(v.has_value(), f_.path(), "key '" + key + "'", "missing");
    return *v;
  }
  std::optional<double> number(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    require(v->is_number(), f_.path(), "key '" + key + "'", std::string("must be a number, found ") + v->type_name());
    return v->get<double>();
  }
  std::optional<std::string> string(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    require(v->is_string(), f_.path(), "key '" + key + "'", std::string("must be a string, found ") + v->type_name());
    return v->get<std::string>();
  }
  const json* find(const std::string& key) const {
    auto it = f_.metadata().find(key);
    return it == f_.metadata().end() ? nullptr : &*it;
  }

 private:
  const GgufFile& f_;
};

// The vocabulary size: the architecture's key, else the length of the tokenizer's token list.
int64_t vocab_size(const Meta& m, const std::string& prefix) {
  if (auto v = m.integer(prefix + "vocab_size")) return *v;
  const json* tokens = m.find("tokenizer.ggml.tokens");
  require(tokens && tokens->is_array(), m.path(), "key '" + prefix + "vocab_size'",
          "missing, and there is no tokenizer.ggml.tokens list to count");
  return int64_t(tokens->size());
}

// head_dim when the file gives one that differs from hidden / heads.
std::optional<int64_t> explicit_head_dim(const Meta& m, const std::string& prefix, int64_t hidden, int64_t heads) {
  auto d = m.integer(prefix + "attention.key_length");
  if (!d) d = m.integer(prefix + "rope.dimension_count");
  if (!d || heads <= 0 || (hidden % heads == 0 && *d == hidden / heads)) return std::nullopt;
  return d;
}

// The rope_freqs tensor's values, when the file has one.
std::optional<std::vector<float>> rope_divisors(const GgufFile& f) {
  for (const GgufTensor& t : f.tensors())
    if (t.name == kGgufRopeFreqs) {
      require(t.dtype == DType::F32 && t.shape.size() == 1, f.path(), "tensor '" + t.name + "'", "must be a vector of F32");
      return f.load_raw(t).to_f32_vector();
    }
  return std::nullopt;
}

double six_decimals(double x) { return std::round(x * 1e6) / 1e6; }

// Hugging Face's llama3 rope_scaling from llama.cpp's rope_freqs divisors c of the frequencies f
// (1 for short wavelengths, `factor` for long ones, 1/((1 - s)/factor + s) between): the factor is
// the largest; the blend s is linear in f, s = A·f + B, so the first and last blended frequencies
// give low_freq_factor and high_freq_factor for an original context length (only their ratios to
// it matter: the file's rope.scaling.original_context_length, else Llama 3's 8192), rounded to
// six decimals. InputError unless these reproduce every divisor within 1e-5.
nlohmann::ordered_json llama3_from_divisors(const std::vector<float>& c, const Meta& m, const std::string& prefix,
                                            int64_t head_dim, double theta) {
  const std::string where = "tensor '" + std::string(kGgufRopeFreqs) + "'";
  require(head_dim > 0 && head_dim % 2 == 0 && theta > 0, m.path(), where,
          "goes with no rotary frequencies (head dimension " + std::to_string(head_dim) + ", freq_base " +
              std::to_string(theta) + ")");
  const std::vector<float> f = rope_inv_freq(head_dim, theta, {});
  require(c.size() == f.size(), m.path(), where, "has " + std::to_string(c.size()) + " values for " +
                                                     std::to_string(f.size()) + " rotary frequencies");
  RopeScaling s{.type = RopeScaling::Type::Llama3, .factor = *std::max_element(c.begin(), c.end())};
  s.original_max_position_embeddings = double(m.integer(prefix + "rope.scaling.original_context_length").value_or(8192));
  std::vector<std::pair<double, double>> blended;  // (f, s)
  for (size_t i = 0; i < c.size(); ++i)
    if (c[i] > 1 + 1e-6 && c[i] < s.factor * (1 - 1e-6))
      blended.emplace_back(f[i], (1 / double(c[i]) - 1 / s.factor) / (1 - 1 / s.factor));
  require(blended.size() >= 2, m.path(), where,
          "has fewer than two blended frequencies: its llama3 parameters cannot be recovered");
  const auto [f1, s1] = blended.front();
  const auto [f2, s2] = blended.back();
  const double A = (s1 - s2) / (f1 - f2), B = s1 - A * f1;
  const double span = s.original_max_position_embeddings / (2 * std::numbers::pi * A);  // high - low
  s.low_freq_factor = six_decimals(-B * span);
  s.high_freq_factor = six_decimals(s.low_freq_factor + span);
  s.factor = six_decimals(s.factor);
  for (size_t i = 0; i < c.size(); ++i) {
    const double smooth = llama3_smooth(f[i], s), want = 1 / ((1 - smooth) / s.factor + smooth);
    require(std::abs(want - c[i]) <= 1e-5 * want, m.path(), where,
            "value " + std::to_string(i) + " is not llama3's rule (factor " + std::to_string(s.factor) + ")");
  }
  return {{"rope_type", "llama3"},
          {"factor", s.factor},
          {"low_freq_factor", s.low_freq_factor},
          {"high_freq_factor", s.high_freq_factor},
          {"original_max_position_embeddings", int64_t(s.original_max_position_embeddings)}};
}

// Hugging Face's rope_scaling from llama.cpp's rope.scaling.* keys (or the older scale_linear), or
// from its rope_freqs tensor; null when the file has none.
nlohmann::ordered_json rope_scaling(const Meta& m, const std::string& prefix, const std::optional<std::vector<float>>& divisors,
                                    int64_t head_dim, double theta) {
  auto type = m.string(prefix + "rope.scaling.type");
  if (divisors && (!type || *type == "none")) return llama3_from_divisors(*divisors, m, prefix, head_dim, theta);
  if (!type) {
    auto linear = m.number(prefix + "rope.scale_linear");
    if (!linear || *linear == 1.0) return nullptr;
    return {{"rope_type", "linear"}, {"factor", *linear}};
  }
  if (*type == "none") return nullptr;
  auto factor = m.number(prefix + "rope.scaling.factor");
  require(factor.has_value(), m.path(), "key '" + prefix + "rope.scaling.factor'",
          "missing, but rope.scaling.type is '" + *type + "'");
  nlohmann::ordered_json j = {{"rope_type", *type}, {"factor", *factor}};
  if (auto original = m.integer(prefix + "rope.scaling.original_context_length"))
    j["original_max_position_embeddings"] = *original;
  return j;
}

bool has_role(const GgufFile& f, Role role) {
  return std::any_of(f.tensors().begin(), f.tensors().end(), [&](const GgufTensor& t) {
    auto id = parse_tensor_name(t.name, Scheme::GGUF);
    return id && id->role == role;
  });
}

// llama.cpp's converter interleaves the two rotary halves of each head's rows in q and k (it views
// Hugging Face's [n_head * D, H] as [n_head, 2, D/2, H] and swaps axes 1 and 2), so GGUF row
// h*D + 2j + s holds Hugging Face row h*D + s*D/2 + j.
int64_t hf_row(int64_t gguf_row, int64_t head_rows) {
  const int64_t head = gguf_row / head_rows, r = gguf_row % head_rows;
  return head * head_rows + (r % 2) * (head_rows / 2) + r / 2;
}

}  // namespace

Tensor reorder_rope_rows(const Tensor& t, int64_t heads, RopeRows to) {
  Tensor out = Tensor::zeros(t.dtype(), t.shape());
  const int64_t rows = t.dim(0), head_rows = rows / heads;
  const uint64_t row_bytes = t.nbytes() / uint64_t(rows);
  const std::byte* src = t.bytes().data();
  std::byte* dst = out.mutable_bytes().data();
  for (int64_t g = 0; g < rows; ++g) {
    const uint64_t gguf = uint64_t(g) * row_bytes, hf = uint64_t(hf_row(g, head_rows)) * row_bytes;
    if (to == RopeRows::HuggingFace) std::memcpy(dst + hf, src + gguf, row_bytes);
    else std::memcpy(dst + gguf, src + hf, row_bytes);
  }
  return out;
}

int64_t llama_interleaved_heads(Role role, const ModelConfig& c) {
  if (role == Role::Q || role == Role::QBias) return c.num_attention_heads;
  if (role == Role::K || role == Role::KBias) return c.num_key_value_heads;
  return 0;
}

ModelConfig config_from_gguf(const GgufFile& f) {
  const Arch& arch = arch_of(f);
  const Meta m(f);
  const std::string p = std::string(arch.gguf) + ".";
  const int64_t experts = m.integer(p + "expert_count").value_or(0);
  const bool qwen_moe = arch.model_type == "qwen2_moe" || arch.model_type == "qwen3_moe";
  require(experts == 0 || arch.rope_interleaved || qwen_moe, f.path(), "key '" + p + "expert_count'",
          "mixture-of-experts " + std::string(arch.gguf) + " files are not supported");
  const bool mixtral = experts != 0 && !qwen_moe;  // a negative count fails ModelConfig's range check
  const int64_t hidden = m.required_integer(p + "embedding_length");
  const int64_t heads = m.required_integer(p + "attention.head_count");

  nlohmann::ordered_json j;
  j["architectures"] = {mixtral ? "MixtralForCausalLM" : std::string(arch.hf_class)};
  j["model_type"] = mixtral ? "mixtral" : std::string(arch.model_type);
  j["vocab_size"] = vocab_size(m, p);
  j["hidden_size"] = hidden;
  j["intermediate_size"] = m.required_integer(p + "feed_forward_length");
  j["num_hidden_layers"] = m.required_integer(p + "block_count");
  j["num_attention_heads"] = heads;
  j["num_key_value_heads"] = m.integer(p + "attention.head_count_kv").value_or(heads);
  const auto head_dim = explicit_head_dim(m, p, hidden, heads);
  if (head_dim) j["head_dim"] = *head_dim;
  if (auto n = m.integer(p + "context_length")) j["max_position_embeddings"] = *n;
  if (auto eps = m.number(p + "attention.layer_norm_rms_epsilon")) j["rms_norm_eps"] = *eps;
  const double theta = m.number(p + "rope.freq_base").value_or(10000.0);  // ModelConfig's default too
  j["rope_theta"] = theta;
  const int64_t rotary_dims = head_dim.value_or(heads > 0 ? hidden / heads : 0);
  if (auto scaling = rope_scaling(m, p, rope_divisors(f), rotary_dims, theta); !scaling.is_null())
    j["rope_scaling"] = scaling;
  if (arch.gguf == "mistral") {  // null: no window (transformers would otherwise assume 4096)
    auto window = m.integer(p + "attention.sliding_window");
    j["sliding_window"] = window ? nlohmann::ordered_json(*window) : nlohmann::ordered_json(nullptr);
  }
  if (mixtral) {
    j["num_local_experts"] = experts;
    j["num_experts_per_tok"] = m.required_integer(p + "expert_used_count");
  }
  if (qwen_moe) {
    j["num_experts"] = m.required_integer(p + "expert_count");
    j["num_experts_per_tok"] = m.required_integer(p + "expert_used_count");
    j["moe_intermediate_size"] = m.required_integer(p + "expert_feed_forward_length");
    // llama.cpp renormalises qwen3moe's top-k weights and not qwen2moe's
    j["norm_topk_prob"] = arch.model_type == "qwen3_moe";
    if (arch.model_type == "qwen2_moe")  // files from before the key: llama.cpp takes feed_forward_length
      j["shared_expert_intermediate_size"] =
          m.integer(p + "expert_shared_feed_forward_length").value_or(j["intermediate_size"].get<int64_t>());
  }
  if (!arch.model_type.starts_with("qwen2")) j["attention_bias"] = has_role(f, Role::QBias);
  j["tie_word_embeddings"] = !has_role(f, Role::LmHead);
  j["hidden_act"] = "silu";
  if (auto id = m.integer("tokenizer.ggml.bos_token_id")) j["bos_token_id"] = *id;
  if (auto id = m.integer("tokenizer.ggml.eos_token_id")) j["eos_token_id"] = *id;
  j["torch_dtype"] = "float32";
  return ModelConfig::from_json(j, f.path());
}

// ---------------------------------------------------------------------------------------------
// The checkpoint

namespace {




// Where a Hugging Face tensor lives in the file: a tensor, or one expert's part of a stacked one
// (expert >= 0); and how many heads' rows were interleaved.
struct Source {
  size_t index;
  int64_t interleaved_heads;
  int expert = -1;
};

// Expert e of a stacked [E, rows, cols] tensor, in place.
Tensor expert_part(const Tensor& stacked, int expert) {
  const uint64_t bytes = stacked.nbytes() / uint64_t(stacked.dim(0));
  return stacked.part(uint64_t(expert) * bytes, {stacked.dim(1), stacked.dim(2)});
}

class GgufCheckpoint final : public Checkpoint {
 public:
  GgufCheckpoint(GgufFile file, ModelConfig config, std::vector<TensorInfo> tensors,
                 std::unordered_map<std::string, Source> sources)
      : Checkpoint(file.path(), config, std::move(tensors), {}, hf_tokenizer_files(file, config)),
        file_(std::move(file)),
        sources_(std::move(sources)) {}

  Tensor load(const std::string& name) const override {
    const Tensor t = load_stored(name);
    return is_quantized(t.dtype()) ? t.to(DType::F32) : t;
  }
  Tensor load_stored(const std::string& name) const override {
    auto it = sources_.find(name);
    require(it != sources_.end(), path(), "tensor '" + name + "'", "not in this checkpoint");
    const Tensor whole = file_.load_raw(file_.tensors()[it->second.index]);
    const Tensor raw = it->second.expert < 0 ? whole : expert_part(whole, it->second.expert);
    if (it->second.interleaved_heads > 0) return reorder_rope_rows(raw, it->second.interleaved_heads, RopeRows::HuggingFace);
    return raw;
  }
  std::string_view format() const override { return "gguf"; }

 private:
  GgufFile file_;
  std::unordered_map<std::string, Source> sources_;
};

std::vector<TensorInfo> in_canonical_order(std::vector<TensorInfo> infos) {
  std::vector<std::string> names;
  names.reserve(infos.size());
  for (const TensorInfo& t : infos) names.push_back(t.name);
  std::vector<TensorInfo> ordered;
  ordered.reserve(infos.size());
  for (size_t i : canonical_order(names)) ordered.push_back(std::move(infos[i]));
  return ordered;
}

}  // namespace

std::unique_ptr<Checkpoint> open_gguf(const fs::path& path) {
  GgufFile file = GgufFile::open(path);
  ModelConfig config = config_from_gguf(file);
  const bool rope_interleaved = arch_of(file).rope_interleaved;
  const Scheme hf = default_scheme(config);
  std::vector<TensorInfo> infos;
  std::unordered_map<std::string, Source> sources;
  auto add = [&](const TensorId& id, const GgufTensor& t, Shape shape, Source source) {
    TensorInfo info{tensor_name(id, hf), is_quantized(t.dtype) ? DType::F32 : t.dtype, std::move(shape)};
    if (is_quantized(t.dtype)) info.stored = t.dtype;
    require(sources.emplace(info.name, source).second, path, "tensor '" + t.name + "'",
            "holds " + info.name + ", which another tensor of the file holds too");
    infos.push_back(std::move(info));
  };
  for (size_t i = 0; i < file.tensors().size(); ++i) {
    const GgufTensor& t = file.tensors()[i];
    if (t.name == kGgufRopeFreqs) continue;  // the config's rope_scaling
    const std::string where = "tensor '" + t.name + "'";
    auto id = parse_tensor_name(t.name, Scheme::GGUF);
    require(id.has_value(), path, where,
            "not a tensor of the llama, mistral, qwen2, qwen2moe, qwen3 or qwen3moe layout that this reader maps to "
            "Hugging Face names");
    const int64_t heads = rope_interleaved ? llama_interleaved_heads(id->role, config) : 0;
    require(heads == 0 || t.shape[0] % (2 * heads) == 0, path, where,
            "shape " + shape_string(t.shape) + " does not split into " + std::to_string(heads) +
                " heads of an even number of rows");
    const bool expert = role_info(id->role).scope == Scope::Expert;
    require(!expert || config.is_moe(), path, where, "holds experts, but the file has no expert_count");
    if (!expert || id->expert != kAllExperts) {
      add(*id, t, t.shape, Source{i, heads});
      continue;
    }
    require(t.shape.size() == 3 && t.shape[0] == config.num_local_experts, path, where,
            "shape " + shape_string(t.shape) + " is not " + std::to_string(config.num_local_experts) +
                " experts' matrices stacked");
    for (int e = 0; e < int(t.shape[0]); ++e)
      add({id->role, id->layer, e}, t, {t.shape[1], t.shape[2]}, Source{i, 0, e});
  }
  return std::make_unique<GgufCheckpoint>(std::move(file), std::move(config), in_canonical_order(std::move(infos)),
                                          std::move(sources));
}

}  // namespace upcycle
