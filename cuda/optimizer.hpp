// AdamW on the GPU: fp32 master weights, moments and gradients on the device; each step
// updates the masters and writes the T copies the model's forward reads, in one fused kernel
// per tensor. The same rules as trainer/optimizer.hpp (no decay on norms and biases, frozen
// tensors untouched and without moments).
#pragma once
#include <cstdint>
#include <filesystem>

#include "cuda/backend.hpp"
#include "trainer/ops/adamw.hpp"
#include "trainer/parameters.hpp"

namespace upcycle::cuda {

template <class T>
class AdamW {
 public:
  // `master` holds the starting weights in fp32 on the host; `model` is the model's T copy on
  // the device, rewritten by every step.
  AdamW(Weights<float>& master, DeviceWeights<T>& model, const ModelConfig& config, const ops::AdamWConfig& hyper,
        const PartSet& frozen);

  // Clips the gradients to max_norm (<= 0: no clipping) and returns their norm before it.
  double clip(DeviceWeights<float>& grads, double max_norm) const;
  // One update at learning rate lr.
  void step(DeviceWeights<float>& grads, double lr);
  int64_t steps() const { return steps_; }
  // The fp32 masters, back on the host (for checkpoints).
  Weights<float> master() { return download(master_, config_); }
  // The moments and the step count in trainer/optimizer.hpp's file (save_moments), and back.
  void save(const std::filesystem::path& file);
  void load(const std::filesystem::path& file);

 private:
  ModelConfig config_;
  ops::AdamWConfig hyper_;
  DeviceWeights<float> master_, m_, v_;
  DeviceWeights<T>& model_;
  int64_t steps_ = 0;
};

}  // namespace upcycle::cuda
