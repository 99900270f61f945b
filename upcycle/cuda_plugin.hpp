// The CUDA backend as a plugin: libupcycle_cuda.so, beside the executable, holds everything that
// runs on the GPU with cuBLAS linked in, and is loaded on the first --device cuda. So the
// executable starts without the CUDA libraries (a machine without them runs every CPU command)
// and does not pay for mapping them (cuBLAS alone: about 210 MB resident at load).
#pragma once
#include <string>

#include "cuda/plugin/abi.hpp"

namespace upcycle {

// Loads the plugin once. UsageError when this build has no CUDA backend; InputError naming the
// file and the loader's reason when it is missing, does not load, or is of another build.
const CudaPlugin& cuda_plugin();

// --device's help, and its engines: "cpu", or "cuda" (the plugin's, loaded here); UsageError
// otherwise.
inline constexpr const char* kDeviceHelp =
    "cpu, or cuda: bf16 weights and activations with fp32 accumulation (and fp32 master weights and "
    "AdamW when training) on the GPU, through libupcycle_cuda.so beside upcycle";
EngineFactory engine_for_device(const std::string& device);

}  // namespace upcycle
