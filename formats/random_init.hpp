// Randomly initialised models: every tensor a config implies, drawn tensor by tensor on demand
// (so a writer streams them), the way transformers initialises Llama-family models: linear and
// embedding weights normal(0, initializer_range), norms one, biases zero.
#pragma once
#include <memory>

#include "core/checkpoint.hpp"

namespace upcycle {

// Each tensor has its own random stream derived from (seed, tensor name): the values do not
// depend on the order tensors are drawn in. std <= 0 takes the config's initializer_range
// (default 0.02). `files` go along when it is written (a tokenizer, say).
std::unique_ptr<Checkpoint> random_init(const ModelConfig& config, uint64_t seed, DType dtype = DType::F32,
                                        double std = 0, std::vector<GeneratedFile> files = {});

}  // namespace upcycle
