// Writing checkpoints: every writer streams tensor by tensor from a Checkpoint (read lazily or
// computed), converts dtypes on the way, and works under a temporary name until complete.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>

#include "core/checkpoint.hpp"

namespace upcycle {

struct WriteOptions {
  std::optional<DType> dtype;              // f32, bf16 or f16 for every tensor; nullopt keeps each
  uint64_t shard_bytes = 5'000'000'000;    // Hugging Face folders: largest shard (a tensor larger
                                           // than this gets a shard of its own)
  bool overwrite = false;                  // replace an existing output
  bool progress = true;                    // progress on stderr
};

// A Hugging Face folder when `out` has no .h5 extension, else HDF5.
void write_checkpoint(const Checkpoint& in, const std::filesystem::path& out, const WriteOptions& opts);

// The dtype a tensor is written in: opts.dtype, else its own (quantized types become f32).
DType output_dtype(DType stored, const WriteOptions& opts);
// The tensor converted to its output dtype (shares the bytes when nothing changes).
Tensor to_output(const Tensor& t, const WriteOptions& opts);

// Format writers (core/hf_folder.cpp, core/h5.cpp).
void write_hf_folder(const Checkpoint& in, const std::filesystem::path& out, const WriteOptions& opts);
void write_h5(const Checkpoint& in, const std::filesystem::path& out, const WriteOptions& opts);

}  // namespace upcycle
