// What libupcycle_cuda.so offers the executable (upcycle/cuda_plugin.hpp loads it): one exported
// function returning a table of entry points, checked by its ABI number.
#pragma once
#include <nlohmann/json.hpp>

#include "cuda/plugin/bench.hpp"
#include "trainer/engine.hpp"

namespace upcycle {

inline constexpr int kCudaPluginAbi = 3;  // raised whenever CudaPlugin changes

struct CudaPlugin {
  int abi = kCudaPluginAbi;
  nlohmann::ordered_json (*bench)(const CudaBenchOptions&) = nullptr;
  EngineFactory make_engine = nullptr;  // bf16 weights and activations, fp32 masters
  LoraEngineFactory make_lora_engine = nullptr;  // a bf16 base, the adapter's A and B in fp32
};

}  // namespace upcycle

// The plugin's one exported symbol.
extern "C" const upcycle::CudaPlugin* upcycle_cuda_plugin();
