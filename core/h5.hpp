// HDF5 checkpoints, our own layout (README "HDF5 layout"): one dataset per tensor at the root,
// named by its Hugging Face name; the config JSON as the root attribute "config"; f32 and f64
// as native floats, bf16 and f16 as 16-bit unsigned integers with a dataset attribute "dtype".
#pragma once
#include <filesystem>
#include <memory>

#include "core/checkpoint.hpp"

namespace upcycle {

std::unique_ptr<Checkpoint> open_h5(const std::filesystem::path& path);

}  // namespace upcycle
