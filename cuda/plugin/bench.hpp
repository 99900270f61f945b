// `upcycle bench --device cuda`: the bf16 GEMM ceiling, then training (and forward) throughput
// and MFU of standard shapes on the GPU, measured in the same run. Built with the CUDA backend
// only; scripts/bench-torch-train.py measures transformers on the same shapes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace upcycle {

struct CudaBenchOptions {
  std::vector<std::string> shapes;  // empty: all of cuda_bench_shapes()
  int64_t batch = 4, seq_len = 2048, steps = 10, warmup = 3;
  int64_t gemm_size = 8192;
};

// The shapes' names: smollm2, smollm2-moe, llama-1b, moe-1b.
std::vector<std::string> cuda_bench_shapes();

// InputError when no usable GPU is there (with the reason), UsageError for an unknown shape.
nlohmann::ordered_json bench_cuda(const CudaBenchOptions& options);

}  // namespace upcycle
