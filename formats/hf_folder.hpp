// Hugging Face model folders: config.json with model.safetensors, or sharded
// model-0000i-of-0000K.safetensors with model.safetensors.index.json.
#pragma once
#include <filesystem>
#include <memory>

#include "core/checkpoint.hpp"

namespace upcycle {

// Validates the index (JSON types, shards that exist and stay inside the folder, every tensor in
// the shard the index names) and each shard's header. Does not check tensors against the config:
// open_checkpoint() does.
std::unique_ptr<Checkpoint> open_hf_folder(const std::filesystem::path& dir);

// Side files a model folder carries that writers copy (tokenizer and generation configs).
std::vector<std::filesystem::path> find_side_files(const std::filesystem::path& dir);

}  // namespace upcycle
