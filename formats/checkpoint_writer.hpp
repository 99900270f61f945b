// Writing checkpoints: every writer streams tensor by tensor from a Checkpoint (read lazily or
// computed), converts dtypes on the way, and works under a temporary name until complete.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>

#include "core/checkpoint.hpp"

namespace upcycle {

struct WriteOptions {
  std::optional<DType> dtype;              // f32, bf16 or f16 for every tensor (GGUF also q8_0, for its
                                           // matrices); nullopt keeps each
  uint64_t shard_bytes = 5'000'000'000;    // Hugging Face folders: largest shard (a tensor larger
                                           // than this gets a shard of its own)
  bool overwrite = false;                  // replace an existing output
  bool progress = true;                    // progress on stderr
};

// HDF5 when `out` ends in .h5, GGUF (llama.cpp's layout) when it ends in .gguf, else a Hugging Face
// folder.
void write_checkpoint(const Checkpoint& in, const std::filesystem::path& out, const WriteOptions& opts);

// The dtype a tensor is written in: opts.dtype, else its own (quantized types become f32).
DType output_dtype(DType stored, const WriteOptions& opts);

// Streams t converted to `dtype` in pieces of at most about max_bytes: sink(bytes, first_element)
// is called for consecutive pieces in order. A file-mapped source has its pages dropped from
// this process's memory behind each piece, so writing a tensor of any size keeps resident
// memory near one piece (the export of a 7B model never holds a whole embedding). `at` is
// where the first element goes in the file: the first piece is cut (page_cut) so that the
// others start on pages there, which OutputFile writes past the page cache without assembling.
using ChunkSink = std::function<void(std::span<const std::byte> bytes, uint64_t first_element)>;
void write_converted(const Tensor& t, DType dtype, const ChunkSink& sink, uint64_t at = 0,
                     uint64_t max_bytes = 16u << 20);
// The same for elements [first, first + count) of a computed tensor, element `first` at `at`.
void write_computed_range(const Tensor& t, DType dtype, uint64_t first, uint64_t count, const ChunkSink& sink,
                          uint64_t at = 0, uint64_t max_bytes = 16u << 20);

// The fewest elements, a multiple of `granule`, that bring a file offset `at` to a page boundary
// (OutputFile::kPage) in elements of element_bytes; 0 where no multiple does.
uint64_t page_cut(uint64_t at, uint64_t element_bytes, uint64_t granule = 1);

// Format writers (formats/hf_folder.cpp, formats/h5_write.cpp).
void write_hf_folder(const Checkpoint& in, const std::filesystem::path& out, const WriteOptions& opts);
void write_h5(const Checkpoint& in, const std::filesystem::path& out, const WriteOptions& opts);
// llama.cpp's tensor names, layouts and keys, with the tokenizer's vocabulary (formats/gguf_write.cpp):
// llama, mistral and mixtral as its llama architecture, qwen2, qwen2_moe as qwen2moe. InputError
// naming the checkpoint for a model type or tensor it has no GGUF layout for.
void write_gguf(const Checkpoint& in, const std::filesystem::path& out, const WriteOptions& opts);

}  // namespace upcycle
