// Opening a checkpoint whatever its format.
#pragma once
#include <filesystem>
#include <memory>

#include "core/checkpoint.hpp"

namespace upcycle {

// Opens any supported checkpoint: a Hugging Face folder (single or sharded safetensors), an
// HDF5 file (.h5), or a GGUF file (.gguf). Validates the config and that every tensor the config
// requires is present with the shape it implies.
std::unique_ptr<Checkpoint> open_checkpoint(const std::filesystem::path& path);

}  // namespace upcycle
