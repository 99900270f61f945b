// libupcycle_cuda.so's entry point (cuda/plugin/abi.hpp).
#include "cuda/engine.hpp"
#include "cuda/plugin/abi.hpp"

extern "C" const upcycle::CudaPlugin* upcycle_cuda_plugin() {
  static const upcycle::CudaPlugin plugin{upcycle::kCudaPluginAbi, &upcycle::bench_cuda,
                                         &upcycle::cuda::make_engine<upcycle::cuda::bf16>,
                                         &upcycle::cuda::make_lora_engine<upcycle::cuda::bf16>};
  return &plugin;
}
