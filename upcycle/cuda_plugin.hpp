// The CUDA backend as a plugin: libupcycle_cuda.so, beside the executable, holds everything that
// runs on the GPU with cuBLAS linked in, and is loaded on the first --device cuda. So the
// executable starts without the CUDA libraries (a machine without them runs every CPU command)
// and does not pay for mapping them (cuBLAS alone is hundreds of MB resident at load).
#pragma once
#include <string>

#include "cuda/plugin/abi.hpp"

namespace upcycle {

// Loads the plugin once. UsageError when this build has no CUDA backend; InputError naming the
// file and the loader's reason when it is missing, does not load, or is of another build.
const CudaPlugin& cuda_plugin();

// Registers "cuda" as a --device (trainer/engine.hpp) whose engines (its LoRA engines too) are
// the plugin's, loaded on first use; in a build without CUDA, using it is a UsageError saying so.
void register_cuda_device();

}  // namespace upcycle
