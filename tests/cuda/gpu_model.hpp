// What the whole-model GPU tests share: small configs the GPU's kernels take (head dim 32) and
// a packed batch with its targets.
#pragma once
#include <string>
#include <vector>

#include "trainer/model.hpp"

namespace upcycle::test {

// llama, mistral (window 16) or mixtral (4 experts, top-2): vocabulary 50, hidden 64, 2 layers.
ModelConfig gpu_config(const std::string& type);

// Two packed sequences (37 and 20 tokens) and their next-token targets, a few ignored.
struct GpuBatch {
  Batch batch;
  std::vector<int32_t> targets;
};
GpuBatch gpu_batch(int64_t vocab, uint64_t seed);

}  // namespace upcycle::test
