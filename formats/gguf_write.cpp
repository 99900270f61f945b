// A model written as a GGUF file that llama.cpp runs without its conversion scripts: llama.cpp's
// tensor names and layouts (q/k rows interleaved for its llama architecture, experts stacked per
// layer), its hyperparameter keys and the tokenizer's vocabulary, merges and chat template.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

#include <spdlog/spdlog.h>

#include "core/background_writer.hpp"
#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "core/gguf_writer.hpp"
#include "core/output_file.hpp"
#include "core/progress.hpp"
#include "core/quant.hpp"
#include "core/staged_path.hpp"
#include "core/tensor_names.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/gguf_model.hpp"
#include "text/gguf_vocabulary.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

// The architecture llama.cpp runs each model type as, whether its converter interleaves the q/k
// rows (the reader, gguf_model.cpp, undoes it for the same architectures), and whether its loader
// requires output.weight (no tied head: a tied embedding goes out twice).
struct Target {
  std::string_view model_type, gguf;
  bool interleave_qk;
  bool head_required = false;
};
constexpr Target kTargets[] = {
    {"llama", "llama", true},
    {"mistral", "llama", true},  // as llama.cpp's converter writes it: no sliding window there
    {"mixtral", "llama", true},  // llama with expert_count
    {"qwen2", "qwen2", false},
    {"qwen3", "qwen3", false},
    {"qwen2_moe", "qwen2moe", false, true},
    {"qwen3_moe", "qwen3moe", false},
};

const Target& target_of(const Checkpoint& in) {
  for (const Target& t : kTargets)
    if (t.model_type == in.config().model_type) return t;
  throw InputError(in.path(), "model_type '" + in.config().model_type +
                                  "' has no GGUF layout here (llama, mistral, mixtral, qwen2, qwen3, qwen2_moe, qwen3_moe)");
}

// llama.cpp's general.file_type for a model whose matrices are in `dtype`.
uint32_t file_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q8_0: return 7;
    case DType::BF16: return 32;
    default: throw std::logic_error("file_type: not an output dtype");
  }
}

// ---------------------------------------------------------------------------------------------
// The tensors

// Rows [first_row, first_row + rows) of a checkpoint tensor viewed as [rows, cols] (all of it
// when rows < 0): one expert of a stacked or fused tensor, or the whole.
struct Piece {
  std::string name;
  int64_t first_row = 0, rows = -1;
};

struct OutTensor {
  GgufTensorInfo info;
  std::vector<Piece> pieces;     // concatenated in order; none for a tensor computed here
  int64_t interleave_heads = 0;  // q/k: heads whose rows llama.cpp's layout interleaves
  Tensor computed = {};          // the values when there are no pieces
};

// llama3 scaling as llama.cpp's converter writes it: each frequency's divisor, 1/((1 - s)/factor + s).
OutTensor rope_freqs(const ModelConfig& c, const RopeScaling& scaling) {
  const std::vector<float> f = rope_inv_freq(c.head_dim, c.rope_theta, {});
  std::vector<float> divisors;
  for (float x : f) {
    const double smooth = llama3_smooth(x, scaling);
    divisors.push_back(float(1 / ((1 - smooth) / scaling.factor + smooth)));
  }
  const Shape shape{int64_t(divisors.size())};
  return {{std::string(kGgufRopeFreqs), DType::F32, shape}, {}, 0, Tensor::from_f32(shape, std::move(divisors))};
}

// The dtype a tensor is written in: vectors and routers in f32 (as llama.cpp's converter keeps
// them), matrices in the asked dtype, or their own; Q8_0 where rows are whole blocks, else f16.
DType out_dtype(Role role, const Shape& shape, DType stored, const WriteOptions& opts) {
  if (shape.size() < 2 || role == Role::Router || role == Role::SharedRouter) return DType::F32;
  const DType d = output_dtype(stored, opts);
  if (d == DType::Q8_0 && shape.back() % dtype_info(DType::Q8_0).block_elems != 0) return DType::F16;
  return d;
}

// The GGUF tensors of `in`, in its order: one per tensor, but the experts of a layer stacked into
// one per role (from per-expert tensors, or from a fused gate_up's halves).
std::vector<OutTensor> plan_tensors(const Checkpoint& in, const Target& target, const WriteOptions& opts) {
  const ModelConfig& c = in.config();
  const Scheme scheme = default_scheme(c);
  std::vector<OutTensor> out;
  std::map<std::pair<int, Role>, size_t> stacks;  // (layer, role) -> index in out
  // The next expert's piece of a layer's stack for `role`, its matrix [rows, cols].
  auto add_expert = [&](Role role, int layer, int64_t rows, int64_t cols, const TensorInfo& t, Piece piece) {
    auto [it, fresh] = stacks.try_emplace({layer, role}, out.size());
    if (fresh) {
      const Shape shape{c.num_local_experts, rows, cols};
      const std::string name = tensor_name({role, layer, kAllExperts}, Scheme::GGUF);
      out.push_back({{name, out_dtype(role, shape, t.stored_dtype(), opts), shape}, {}, 0});
    }
    out[it->second].pieces.push_back(std::move(piece));
    return out[it->second].pieces.size() - 1;  // the expert it is
  };
  for (const TensorInfo& t : in.tensors()) {
    const std::string where = "tensor '" + t.name + "'";
    auto id = parse_tensor_name(t.name, scheme);
    if (!id) id = parse_tensor_name(t.name, Scheme::HFFused);
    require(id.has_value(), in.path(), where, "has no GGUF name (not a tensor of the model's layout)");
    const int layer = id->layer;
    if (id->role == Role::ExpertsDown) {  // [E, H, I]
      for (int64_t e = 0; e < t.shape[0]; ++e)
        add_expert(Role::ExpertDown, layer, t.shape[1], t.shape[2], t, {t.name, e * t.shape[1], t.shape[1]});
    } else if (id->role == Role::ExpertsGateUp) {  // [E, 2I, H]: each expert's gate rows, then its up rows
      const int64_t rows = t.shape[1] / 2;
      for (int64_t e = 0; e < t.shape[0]; ++e) {
        add_expert(Role::ExpertGate, layer, rows, t.shape[2], t, {t.name, e * t.shape[1], rows});
        add_expert(Role::ExpertUp, layer, rows, t.shape[2], t, {t.name, e * t.shape[1] + rows, rows});
      }
    } else if (role_info(id->role).scope == Scope::Expert) {
      const size_t placed = add_expert(id->role, layer, t.shape[0], t.shape[1], t, {t.name});
      require(int(placed) == id->expert, in.path(), where, "comes before the experts numbered below it");
    } else {
      const int64_t heads = target.interleave_qk ? llama_interleaved_heads(id->role, c) : 0;
      require(heads == 0 || t.shape[0] % (2 * heads) == 0, in.path(), where,
              "rows do not split into " + std::to_string(heads) + " heads of an even size");
      const DType dtype = out_dtype(id->role, t.shape, t.stored_dtype(), opts);
      out.push_back({{tensor_name(*id, Scheme::GGUF), dtype, t.shape}, {{t.name}}, heads});
      if (id->role == Role::TokenEmbedding && c.tie_word_embeddings && target.head_required)
        out.push_back({{tensor_name({Role::LmHead}, Scheme::GGUF), dtype, t.shape}, {{t.name}}, 0});
    }
  }
  const RopeScaling scaling = parse_rope_scaling(c.rope_scaling, in.path());
  if (scaling.type == RopeScaling::Type::Llama3) out.push_back(rope_freqs(c, scaling));
  for (const auto& [key, index] : stacks)
    require(int64_t(out[index].pieces.size()) == c.num_local_experts, in.path(),
            "layer " + std::to_string(key.first) + " has " + std::to_string(out[index].pieces.size()) + " experts' " +
                out[index].info.name + ", not " + std::to_string(c.num_local_experts));
  return out;
}

// ---------------------------------------------------------------------------------------------
// The keys

void add_hyperparameters(std::vector<GgufKeyValue>& kv, const ModelConfig& c, const std::string& arch, const fs::path& src) {
  const std::string p = arch + ".";
  auto u32 = [&](const std::string& key, int64_t v) { kv.push_back({p + key, uint32_t(v)}); };
  u32("vocab_size", c.vocab_size);
  u32("context_length", c.max_position_embeddings);
  u32("embedding_length", c.hidden_size);
  u32("block_count", c.num_hidden_layers);
  u32("feed_forward_length", c.intermediate_size);
  u32("attention.head_count", c.num_attention_heads);
  u32("attention.head_count_kv", c.num_key_value_heads);
  kv.push_back({p + "attention.layer_norm_rms_epsilon", float(c.rms_norm_eps)});
  kv.push_back({p + "rope.freq_base", float(c.rope_theta)});
  u32("rope.dimension_count", c.head_dim);
  if (c.head_dim * c.num_attention_heads != c.hidden_size) {
    u32("attention.key_length", c.head_dim);
    u32("attention.value_length", c.head_dim);
  }
  const RopeScaling scaling = parse_rope_scaling(c.rope_scaling, src);  // llama3's: a tensor, rope_freqs
  if (scaling.type == RopeScaling::Type::Linear) {
    kv.push_back({p + "rope.scaling.type", std::string("linear")});
    kv.push_back({p + "rope.scaling.factor", float(scaling.factor)});
  }
  if (c.is_moe()) {
    u32("expert_count", c.num_local_experts);
    u32("expert_used_count", c.num_experts_per_tok);
  }
  if (c.model_type == "qwen2_moe" || c.model_type == "qwen3_moe") u32("expert_feed_forward_length", c.moe_intermediate_size);
  if (c.model_type == "qwen2_moe") u32("expert_shared_feed_forward_length", c.shared_expert_intermediate_size);
}

void add_vocabulary(std::vector<GgufKeyValue>& kv, GgufVocabulary v) {
  kv.push_back({"tokenizer.ggml.model", v.model});
  if (!v.pre.empty()) kv.push_back({"tokenizer.ggml.pre", v.pre});
  kv.push_back({"tokenizer.ggml.tokens", std::move(v.tokens)});
  if (!v.scores.empty()) kv.push_back({"tokenizer.ggml.scores", std::move(v.scores)});
  kv.push_back({"tokenizer.ggml.token_type", std::move(v.types)});
  if (v.model == "gpt2") kv.push_back({"tokenizer.ggml.merges", std::move(v.merges)});
  if (v.bos) kv.push_back({"tokenizer.ggml.bos_token_id", uint32_t(*v.bos)});
  if (v.eos) kv.push_back({"tokenizer.ggml.eos_token_id", uint32_t(*v.eos)});
  if (v.unk) kv.push_back({"tokenizer.ggml.unknown_token_id", uint32_t(*v.unk)});
  kv.push_back({"tokenizer.ggml.add_bos_token", v.add_bos});
  if (v.chat_template) kv.push_back({"tokenizer.chat_template", std::move(*v.chat_template)});
}

// A scratch folder, removed with everything in it when done.
class ScratchFolder {
 public:
  ScratchFolder() {
    std::string name = (fs::temp_directory_path() / "upcycle-gguf-XXXXXX").string();
    if (!mkdtemp(name.data())) throw InputError(fs::temp_directory_path(), "cannot create a scratch folder");
    path_ = name;
  }
  ~ScratchFolder() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

constexpr const char* kTokenizerFiles[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                                           "chat_template.jinja"};

// The checkpoint's tokenizer (its side files, or those it generates, such as a GGUF source's) as
// GGUF keys, read from a scratch copy of those files; nullopt when it has none.
std::optional<GgufVocabulary> vocabulary_of(const Checkpoint& in) {
  ScratchFolder scratch;
  for (const fs::path& f : in.side_files())
    if (std::find(std::begin(kTokenizerFiles), std::end(kTokenizerFiles), f.filename()) != std::end(kTokenizerFiles))
      fs::copy_file(f, scratch.path() / f.filename(), fs::copy_options::skip_existing);
  for (const GeneratedFile& g : in.generated_files())
    if (std::find(std::begin(kTokenizerFiles), std::end(kTokenizerFiles), g.name) != std::end(kTokenizerFiles) &&
        !fs::exists(scratch.path() / g.name))
      if (auto text = g.contents()) write_text_file(scratch.path() / g.name, *text);
  return gguf_vocabulary(scratch.path(), in.config().vocab_size);
}

std::vector<GgufKeyValue> metadata(const Checkpoint& in, const Target& target, const fs::path& out, DType matrices) {
  std::vector<GgufKeyValue> kv{{"general.architecture", std::string(target.gguf)},
                               {"general.name", out.stem().string()},
                               {"general.file_type", file_type(matrices)}};
  if (matrices == DType::Q8_0) kv.push_back({"general.quantization_version", uint32_t(2)});
  add_hyperparameters(kv, in.config(), std::string(target.gguf), in.path());
  if (auto v = vocabulary_of(in)) add_vocabulary(kv, std::move(*v));
  else spdlog::warn("{}: no tokenizer files: the GGUF has no vocabulary, and llama.cpp will not load it", in.path().string());
  const ModelConfig& c = in.config();
  if (target.gguf == "llama" && c.sliding_window)
    spdlog::warn("{}: llama.cpp runs {} as llama, without the sliding window of {} tokens: longer contexts differ",
                 in.path().string(), c.model_type, *c.sliding_window);
  // llama.cpp renormalises qwen3moe's top-k weights and never qwen2moe's, whatever the config says.
  if ((c.model_type == "qwen2_moe" && c.norm_topk_prob) || (c.model_type == "qwen3_moe" && !c.norm_topk_prob))
    spdlog::warn("{}: norm_topk_prob is {}, but llama.cpp {} {}'s top-k weights: its outputs will differ",
                 in.path().string(), c.norm_topk_prob, c.norm_topk_prob ? "does not renormalise" : "renormalises",
                 target.gguf);
  return kv;
}

// ---------------------------------------------------------------------------------------------
// The bytes

// Sequential writes at the file's offsets, on a thread of their own past the page cache
// (core/background_writer.hpp); unchanged bytes of a file copied file to file in the kernel.
class FileBytes {
 public:
  explicit FileBytes(const fs::path& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw InputError(path, std::string("cannot create: ") + std::strerror(errno));
    out_ = std::make_unique<BackgroundWriter>(fd_, path, true);
  }
  ~FileBytes() {
    out_.reset();  // its queue finished before the file closes
    if (fd_ >= 0) ::close(fd_);
  }
  void write(std::span<const std::byte> bytes) {
    out_->write(bytes, at_);
    at_ += bytes.size();
  }
  // [offset, offset + length) of `from`.
  void copy(std::shared_ptr<const ReadOnlyFile> from, uint64_t offset, uint64_t length) {
    out_->copy(std::move(from), offset, length, at_);
    at_ += length;
  }
  void pad_to(uint64_t at) {
    static constexpr std::byte kZeros[kGgufAlignment] = {};
    if (at > at_) write({kZeros, size_t(at - at_)});
  }
  uint64_t at() const { return at_; }
  // Everything written and synced: the file may be renamed into place.
  void close() {
    out_->drain();
    out_.reset();
    const int fd = std::exchange(fd_, -1);
    if (::fsync(fd) != 0 || ::close(fd) != 0) throw InputError(path_, std::string("cannot write: ") + std::strerror(errno));
  }

 private:
  fs::path path_;
  int fd_ = -1;
  std::unique_ptr<BackgroundWriter> out_;
  uint64_t at_ = 0;
};

// f32 values in, Q8_0 blocks out: pieces of any length, the values short of a block kept for the next.
class Q8Sink {
 public:
  explicit Q8Sink(FileBytes& file) : file_(file) {}
  void add(std::span<const float> values) {
    pending_.insert(pending_.end(), values.begin(), values.end());
    const size_t whole = pending_.size() / 32 * 32;
    blocks_.resize(whole / 32 * 34);
    quantize_q8_0(pending_.data(), whole, blocks_.data());
    file_.write(blocks_);
    pending_.erase(pending_.begin(), pending_.begin() + ptrdiff_t(whole));
  }
  bool empty() const { return pending_.empty(); }

 private:
  FileBytes& file_;
  std::vector<float> pending_;
  std::vector<std::byte> blocks_;
};

// One piece converted to `dtype` onto the end of the file.
void write_piece(const Tensor& t, const Piece& piece, DType dtype, FileBytes& file) {
  const uint64_t row_elems = uint64_t(t.shape().back());
  const uint64_t per_row = t.numel() / row_elems;  // rows of the tensor viewed as [rows, cols]
  const uint64_t first = uint64_t(piece.first_row) * row_elems;
  const uint64_t count = (piece.rows < 0 ? per_row : uint64_t(piece.rows)) * row_elems;
  const bool q8 = dtype == DType::Q8_0;
  Q8Sink q8_sink(file);
  const ChunkSink sink = [&](std::span<const std::byte> bytes, uint64_t) {
    if (q8) q8_sink.add({reinterpret_cast<const float*>(bytes.data()), bytes.size() / sizeof(float)});
    else file.write(bytes);
  };
  const DType written = q8 ? DType::F32 : dtype;
  if (!q8 && !t.is_computed() && t.dtype() == dtype && t.file_span()) {  // the file's bytes as they are
    const uint64_t element_bytes = dtype_info(dtype).block_bytes;
    file.copy(t.file_span()->file, t.file_span()->offset + first * element_bytes, count * element_bytes);
  } else if (t.is_computed()) {
    write_computed_range(t, written, first, count, sink);
  } else {
    const uint64_t element_bytes = dtype_info(t.dtype()).block_bytes;  // loaded tensors are plain
    write_converted(t.part(first * element_bytes, {int64_t(count)}), written, sink);
  }
  if (!q8_sink.empty()) throw std::logic_error("write_piece: rows are not whole Q8_0 blocks");
}

}  // namespace

void write_gguf(const Checkpoint& in, const fs::path& out, const WriteOptions& opts) {
  const Target& target = target_of(in);
  const std::vector<OutTensor> tensors = plan_tensors(in, target, opts);
  std::vector<GgufTensorInfo> infos;
  for (const OutTensor& t : tensors) infos.push_back(t.info);
  // What llama.cpp reports the file as: the dtype of its matrices (the embedding's, the first).
  const DType matrices = std::find_if(infos.begin(), infos.end(), [](const GgufTensorInfo& t) {
                           return t.shape.size() >= 2;
                         })->dtype;
  const GgufLayout layout = gguf_layout(metadata(in, target, out, matrices), infos);

  StagedPath staged(out, opts.overwrite);
  Progress progress("writing " + staged.final_path().filename().string(), layout.data_bytes, "B", opts.progress);
  staged.run([&] {
    FileBytes file(staged.temp());
    file.write(std::as_bytes(std::span(layout.header)));
    const uint64_t data_start = file.at();
    for (size_t i = 0; i < tensors.size(); ++i) {
      const OutTensor& t = tensors[i];
      file.pad_to(data_start + layout.offsets[i]);
      if (t.pieces.empty()) write_piece(t.computed, {}, t.info.dtype, file);
      for (const Piece& piece : t.pieces) {
        Tensor loaded = in.load(piece.name);
        if (t.interleave_heads > 0) loaded = reorder_rope_rows(loaded, t.interleave_heads, RopeRows::Interleaved);
        write_piece(loaded, piece, t.info.dtype, file);
      }
      require(file.at() == data_start + layout.offsets[i] + layout.sizes[i], in.path(), "tensor '" + t.info.name + "'",
              "wrote a size other than its shape's");
      progress.advance(layout.sizes[i]);
    }
    file.pad_to(data_start + layout.data_bytes);
    file.close();
  });
  staged.commit();
  progress.finish();
}

}  // namespace upcycle
