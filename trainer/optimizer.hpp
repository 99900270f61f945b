// AdamW over the model's fp32 master weights: per-tensor moments shaped like the weights, no
// weight decay on norms and biases, frozen tensors untouched and without moments.
#pragma once
#include <cstdint>
#include <filesystem>

#include "trainer/ops/adamw.hpp"
#include "trainer/parameters.hpp"

namespace upcycle {

class AdamW {
 public:
  AdamW(Weights<float>& weights, const ModelConfig& config, const ops::AdamWConfig& hyper, const PartSet& frozen);

  // Clips the gradients to max_norm (<= 0: no clipping) and returns their norm before it.
  double clip(Weights<float>& grads, double max_norm) const;
  // One update at learning rate lr.
  void step(Weights<float>& grads, double lr);
  int64_t steps() const { return steps_; }

  // The moments and the step count in one safetensors file (exp_avg.NAME, exp_avg_sq.NAME), and
  // back; load checks that every tensor is there with its shape (InputError naming the file).
  void save(const std::filesystem::path& file);
  void load(const std::filesystem::path& file);

 private:
  Weights<float>& weights_;
  ModelConfig config_;
  ops::AdamWConfig hyper_;
  Weights<float> m_, v_;
  int64_t steps_ = 0;
};

}  // namespace upcycle
