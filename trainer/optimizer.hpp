// AdamW over the model's fp32 master weights: per-tensor moments shaped like the weights, no
// weight decay on norms and biases, frozen tensors untouched and without moments.
#pragma once
#include <cstdint>
#include <filesystem>

#include "trainer/ops/adamw.hpp"
#include "trainer/parameters.hpp"

namespace upcycle {

// AdamW's state in one safetensors file: exp_avg.NAME and exp_avg_sq.NAME for each trained
// tensor (those non-empty in m and v) and the step count in the metadata. load_moments fills m
// and v's non-empty tensors and returns the step count; InputError naming the file when a
// tensor is missing or of another shape.
void save_moments(const std::filesystem::path& file, Weights<float>& m, Weights<float>& v, const ModelConfig& config,
                  int64_t steps);
int64_t load_moments(const std::filesystem::path& file, Weights<float>& m, Weights<float>& v,
                     const ModelConfig& config);

class AdamW {
 public:
  AdamW(Weights<float>& weights, const ModelConfig& config, const ops::AdamWConfig& hyper, const PartSet& frozen);

  // Clips the gradients to max_norm (<= 0: no clipping) and returns their norm before it.
  double clip(Weights<float>& grads, double max_norm) const;
  // One update at learning rate lr.
  void step(Weights<float>& grads, double lr);
  int64_t steps() const { return steps_; }

  // The moments and the step count (save_moments above), and back.
  void save(const std::filesystem::path& file) { save_moments(file, m_, v_, config_, steps_); }
  void load(const std::filesystem::path& file) { steps_ = load_moments(file, m_, v_, config_); }

 private:
  Weights<float>& weights_;
  ModelConfig config_;
  ops::AdamWConfig hyper_;
  Weights<float> m_, v_;
  int64_t steps_ = 0;
};

}  // namespace upcycle
