// The CUDA backend as a plugin: libupcycle_cuda.so, beside the executable, holds everything that
// runs on the GPU with cuBLAS linked in, and is loaded on the first --device cuda. So the
// executable starts without the CUDA libraries (a machine without them runs every CPU command)
// and does not pay for mapping them (cuBLAS alone: about 210 MB resident at load).
#pragma once
#include <nlohmann/json.hpp>

#include "upcycle/bench_cuda.hpp"

namespace upcycle {

inline constexpr int kCudaPluginAbi = 1;  // raised whenever CudaPlugin changes

struct CudaPlugin {
  int abi = kCudaPluginAbi;
  nlohmann::ordered_json (*bench)(const CudaBenchOptions&) = nullptr;
};

// Loads the plugin once. UsageError when this build has no CUDA backend; InputError naming the
// file and the loader's reason when it is missing, does not load, or is of another build.
const CudaPlugin& cuda_plugin();

}  // namespace upcycle

// The plugin's one exported symbol.
extern "C" const upcycle::CudaPlugin* upcycle_cuda_plugin();
