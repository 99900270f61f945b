// The llama-family view of a GGUF model: the Hugging Face config its metadata implies, and a
// Checkpoint with Hugging Face names and row layout (q/k permutation undone, quantized tensors
// dequantized).
#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "core/error.hpp"
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
    {"llama", "llama", "LlamaForCausalLM", true},
    {"mistral", "mistral", "MistralForCausalLM", true},
    {"qwen2", "qwen2", "Qwen2ForCausalLM", false},
};

const Arch& arch_of(const GgufFile& f) {
  const std::string name = f.architecture();
  require(!name.empty(), f.path(), "key 'general.architecture'", "missing or not a string");
  for (const Arch& a : kArchs)
    if (a.gguf == name) return a;
  throw InputError(f.path(), "key 'general.architecture'",
                   "'" + name + "' is not supported (llama, mistral, qwen2)");
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

// Hugging Face's rope_scaling from llama.cpp's rope.scaling.* keys (or the older scale_linear);
// null when the file has none.
nlohmann::ordered_json rope_scaling(const Meta& m, const std::string& prefix) {
  auto type = m.string(prefix + "rope.scaling.type");
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

}  // namespace

ModelConfig config_from_gguf(const GgufFile& f) {
  const Arch& arch = arch_of(f);
  const Meta m(f);
  const std::string p = std::string(arch.gguf) + ".";
  const int64_t experts = m.integer(p + "expert_count").value_or(0);
  require(experts == 0 || arch.rope_interleaved, f.path(), "key '" + p + "expert_count'",
          "mixture-of-experts " + std::string(arch.gguf) + " files are not supported");
  const bool moe = experts != 0;  // a negative count fails ModelConfig's range check
  const int64_t hidden = m.required_integer(p + "embedding_length");
  const int64_t heads = m.required_integer(p + "attention.head_count");

  nlohmann::ordered_json j;
  j["architectures"] = {moe ? "MixtralForCausalLM" : std::string(arch.hf_class)};
  j["model_type"] = moe ? "mixtral" : std::string(arch.model_type);
  j["vocab_size"] = vocab_size(m, p);
  j["hidden_size"] = hidden;
  j["intermediate_size"] = m.required_integer(p + "feed_forward_length");
  j["num_hidden_layers"] = m.required_integer(p + "block_count");
  j["num_attention_heads"] = heads;
  j["num_key_value_heads"] = m.integer(p + "attention.head_count_kv").value_or(heads);
  if (auto d = explicit_head_dim(m, p, hidden, heads)) j["head_dim"] = *d;
  if (auto n = m.integer(p + "context_length")) j["max_position_embeddings"] = *n;
  if (auto eps = m.number(p + "attention.layer_norm_rms_epsilon")) j["rms_norm_eps"] = *eps;
  if (auto theta = m.number(p + "rope.freq_base")) j["rope_theta"] = *theta;
  if (auto scaling = rope_scaling(m, p); !scaling.is_null()) j["rope_scaling"] = scaling;
  if (arch.gguf == "mistral") {  // null: no window (transformers would otherwise assume 4096)
    auto window = m.integer(p + "attention.sliding_window");
    j["sliding_window"] = window ? nlohmann::ordered_json(*window) : nlohmann::ordered_json(nullptr);
  }
  if (moe) {
    j["num_local_experts"] = experts;
    j["num_experts_per_tok"] = m.required_integer(p + "expert_used_count");
  }
  if (arch.model_type != "qwen2") j["attention_bias"] = has_role(f, Role::QBias);
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

// llama.cpp's converter interleaves the two rotary halves of each head's rows in q and k (it views
// Hugging Face's [n_head * D, H] as [n_head, 2, D/2, H] and swaps axes 1 and 2), so GGUF row
// h*D + 2j + s holds Hugging Face row h*D + s*D/2 + j.
int64_t hf_row(int64_t gguf_row, int64_t head_rows) {
  const int64_t head = gguf_row / head_rows, r = gguf_row % head_rows;
  return head * head_rows + (r % 2) * (head_rows / 2) + r / 2;
}

// raw [R, ...] with its rows back in Hugging Face order, in its stored dtype (a quantized row is
// whole blocks: checked when the file was opened).
Tensor unpermute_rows(const Tensor& raw, int64_t heads) {
  Tensor out = Tensor::zeros(raw.dtype(), raw.shape());
  const int64_t rows = raw.dim(0), head_rows = rows / heads;
  const uint64_t row_bytes = raw.nbytes() / uint64_t(rows);
  const std::byte* src = raw.bytes().data();
  std::byte* dst = out.mutable_bytes().data();
  for (int64_t g = 0; g < rows; ++g, src += row_bytes)
    std::memcpy(dst + uint64_t(hf_row(g, head_rows)) * row_bytes, src, row_bytes);
  return out;
}

// Heads whose rows llama.cpp interleaved in a tensor of this role; 0 for tensors left alone.
int64_t interleaved_heads(Role role, const ModelConfig& c, bool rope_interleaved) {
  if (!rope_interleaved) return 0;
  if (role == Role::Q || role == Role::QBias) return c.num_attention_heads;
  if (role == Role::K || role == Role::KBias) return c.num_key_value_heads;
  return 0;
}

// Where a Hugging Face tensor lives in the file, and how many heads' rows were interleaved.
struct Source {
  size_t index;
  int64_t interleaved_heads;
};

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
    const Tensor raw = file_.load_raw(file_.tensors()[it->second.index]);
    if (it->second.interleaved_heads > 0) return unpermute_rows(raw, it->second.interleaved_heads);
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
  std::vector<TensorInfo> infos;
  std::unordered_map<std::string, Source> sources;
  for (size_t i = 0; i < file.tensors().size(); ++i) {
    const GgufTensor& t = file.tensors()[i];
    const std::string where = "tensor '" + t.name + "'";
    auto id = parse_tensor_name(t.name, Scheme::GGUF);
    require(id.has_value(), path, where,
            "not a tensor of the llama, mistral or qwen2 layout that this reader maps to Hugging Face names "
            "(mixture-of-experts files must store one tensor per expert)");
    const int64_t heads = interleaved_heads(id->role, config, rope_interleaved);
    require(heads == 0 || t.shape[0] % (2 * heads) == 0, path, where,
            "shape " + shape_string(t.shape) + " does not split into " + std::to_string(heads) +
                " heads of an even number of rows");
    TensorInfo info{tensor_name(*id, Scheme::HF), is_quantized(t.dtype) ? DType::F32 : t.dtype, t.shape};
    if (is_quantized(t.dtype)) info.stored = t.dtype;
    sources.emplace(info.name, Source{i, heads});
    infos.push_back(std::move(info));
  }
  return std::make_unique<GgufCheckpoint>(std::move(file), std::move(config), in_canonical_order(std::move(infos)),
                                          std::move(sources));
}

}  // namespace upcycle
