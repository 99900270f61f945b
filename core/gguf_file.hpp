// GGUF v2/v3 files (llama.cpp): the raw container, metadata and tensors as stored (a
// tokenizer-only GGUF opens fine). Reading one as a model: formats/gguf_model.hpp.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/mapped_file.hpp"
#include "core/tensor.hpp"

namespace upcycle {

struct GgufTensor {
  std::string name;  // GGUF's own name: "blk.0.attn_q.weight"
  DType dtype;       // GGUF's type, which may be quantized
  Shape shape;       // row major, slowest first (GGUF lists dims fastest first: reversed here)
  uint64_t offset;   // absolute, in the file
  uint64_t nbytes;
};

// ggml's number for a dtype (F32 0, F16 1, ..., BF16 30): what GGUF stores as a tensor's type.
uint32_t ggml_type_id(DType t);

class GgufFile {
 public:
  // Validates magic, version (2 or 3), counts against the file size, every key/value and
  // string length, tensor types, dims (overflow checked) and data ranges (inside the file,
  // aligned, not overlapping). Throws InputError naming the file (and key or tensor). Limits
  // against hostile files: arrays nest at most 16 deep and the metadata holds at most 2^24
  // values (real tokenizers hold well under a million).
  static GgufFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  // Every key/value: numbers, strings, booleans, arrays as JSON values. Two conversions keep it
  // safe to dump: a string that is not valid UTF-8 has each bad byte replaced by U+FFFD (GGUF
  // requires UTF-8; real files never hit this), and a FLOAT32 becomes the shortest double that
  // reads back as the same float (1e-05 rather than 9.999999747378752e-06).
  const nlohmann::json& metadata() const { return metadata_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  Tensor load_raw(const GgufTensor& t) const;  // as stored (maybe quantized), memory mapped

  std::string architecture() const;  // general.architecture, "" when absent

 private:
  std::shared_ptr<const ReadOnlyFile> file_;
  uint32_t version_ = 0;
  nlohmann::json metadata_;
  std::vector<GgufTensor> tensors_;
};

}  // namespace upcycle
