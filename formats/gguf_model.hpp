// A GGUF file (core/gguf_file.hpp) read as a model: a llama-family model presented as a
// Checkpoint with Hugging Face names and layout (q/k row permutation undone, quantized tensors
// dequantized to f32).
#pragma once
#include <filesystem>
#include <memory>

#include "core/checkpoint.hpp"
#include "core/gguf_file.hpp"
#include "core/tensor_roles.hpp"

namespace upcycle {

// The config a GGUF model implies (llama and qwen2 architectures); InputError otherwise.
ModelConfig config_from_gguf(const GgufFile& file);

std::unique_ptr<Checkpoint> open_gguf(const std::filesystem::path& path);

// The heads whose rows llama.cpp's converter interleaves in a tensor of this role under its llama
// architecture (q and k, and their biases; the writer does the same, the reader undoes it); 0 for
// the rest.
int64_t llama_interleaved_heads(Role role, const ModelConfig& config);

// A q/k tensor [heads·D, ...] with its rows in llama.cpp's interleaved order or back in Hugging
// Face's, in its own dtype (a quantized row is whole blocks).
enum class RopeRows { Interleaved, HuggingFace };
Tensor reorder_rope_rows(const Tensor& t, int64_t heads, RopeRows to);

}  // namespace upcycle
