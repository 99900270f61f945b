// `upcycle bench --router-stage`: UpIT's router stage (convert's, convert/router_stage.hpp) on an
// MoE of a preset's shape, from two dense checkpoints drawn at random and written beside the
// scratch folder (the other experts their DARE children), on random seed samples: the time of
// each part, tokens per second of the experts' scoring and of the routers' fitting, and the
// process's peak resident memory.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "core/dtype.hpp"
#include "trainer/stored_weights.hpp"

namespace upcycle {

struct RouterStageBench {
  std::string shape = "llama-1b";  // a preset (formats/model_presets.hpp)
  int experts = 8, top_k = 2;
  int64_t samples = 16, sample_tokens = 128;  // seed samples, each half prompt, half response
  int64_t batch_tokens = 2048, epochs = 1;
  Precision precision = Precision::F32;
  DType dtype = DType::BF16;  // the checkpoints' and the MoE's
  std::filesystem::path scratch = std::filesystem::temp_directory_path() / "upcycle-bench-router-stage";
  bool progress = true;
};

// The figures as one JSON object (its keys in the README); UsageError for an unknown shape or
// options out of range.
nlohmann::ordered_json bench_router_stage(const RouterStageBench& o);

}  // namespace upcycle
