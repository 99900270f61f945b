// A checkpoint: a model config plus named tensors read lazily, one at a time. Readers of every
// format, and stages that compute tensors (merges, assembly), present this one interface, and
// the writers take it, so a conversion streams tensor by tensor.
#pragma once
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/config.hpp"
#include "core/tensor.hpp"

namespace upcycle {

struct TensorInfo {
  std::string name;  // the Hugging Face name
  DType dtype;       // what load() returns (GGUF's quantized types load as f32)
  Shape shape;
  std::optional<DType> stored = std::nullopt;  // the type in the file when it differs from dtype

  DType stored_dtype() const { return stored.value_or(dtype); }
};

// A side file made on demand rather than copied: tokenizer files built from a GGUF's metadata.
// contents() runs only when a writer writes the file; nullopt when it cannot be made after all
// (the producer has logged why), so that only writing, not opening, warns.
struct GeneratedFile {
  std::string name;  // a plain file name
  std::function<std::optional<std::string>()> contents;
};

class Checkpoint {
 public:
  virtual ~Checkpoint() = default;

  const std::filesystem::path& path() const { return path_; }
  const ModelConfig& config() const { return config_; }
  // In a stable order: the file's order for readers, the canonical order for computed ones.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;
  // Loads one tensor; InputError naming the file and tensor when it is absent or unreadable.
  virtual Tensor load(const std::string& name) const = 0;
  // The same as the file stores it, quantized types kept (GGUF's; load() gives them as f32), for
  // a model that computes on the stored bytes (trainer/stored_weights.hpp).
  virtual Tensor load_stored(const std::string& name) const { return load(name); }
  virtual std::string_view format() const = 0;  // "safetensors", "hdf5", "gguf", "computed"
  // Whether loading the tensor waits on work still under way (an expert search running while
  // its output is written): writers that can place tensors in any order take the others first.
  virtual bool waits(const std::string&) const { return false; }

  // Files that travel with the weights (tokenizer.json, tokenizer.model, generation_config.json,
  // chat templates): writers of model folders copy them.
  const std::vector<std::filesystem::path>& side_files() const { return side_files_; }
  // Side files to write that no file holds; a copied side file of the same name wins.
  const std::vector<GeneratedFile>& generated_files() const { return generated_files_; }

  uint64_t parameter_count() const;
  uint64_t stored_bytes() const;  // bytes of tensor data as stored

 protected:
  Checkpoint(std::filesystem::path path, ModelConfig config, std::vector<TensorInfo> tensors,
             std::vector<std::filesystem::path> side_files = {}, std::vector<GeneratedFile> generated_files = {});

 private:
  std::filesystem::path path_;
  ModelConfig config_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<std::filesystem::path> side_files_;
  std::vector<GeneratedFile> generated_files_;
};

// A checkpoint whose tensors are computed on demand (merges, assembled MoE, converted dtypes).
class ComputedCheckpoint : public Checkpoint {
 public:
  using Loader = std::function<Tensor(const TensorInfo&)>;
  using Waits = std::function<bool(const std::string&)>;
  ComputedCheckpoint(ModelConfig config, std::vector<TensorInfo> tensors, Loader loader,
                     std::vector<std::filesystem::path> side_files = {},
                     std::vector<GeneratedFile> generated_files = {}, Waits waits = {});
  // The same with `like`'s side and generated files (none without it): a model computed from
  // another that keeps its tokenizer and other files.
  static std::unique_ptr<ComputedCheckpoint> with_files_of(const Checkpoint* like, ModelConfig config,
                                                           std::vector<TensorInfo> tensors, Loader loader);
  Tensor load(const std::string& name) const override;
  std::string_view format() const override { return "computed"; }
  bool waits(const std::string& name) const override { return waits_ && waits_(name); }

 private:
  Loader loader_;
  Waits waits_;
};

}  // namespace upcycle
