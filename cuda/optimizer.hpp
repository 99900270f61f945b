// AdamW on the GPU: fp32 masters, moments and gradients on the device; each step updates a
// tensor's master and writes the T copy the model reads, in one fused kernel per tensor. It
// trains the tensors its engine lists: the model's own that are not frozen (trained_tensors: the
// same rules as trainer/optimizer.hpp, no decay on norms and biases) and others, such as a LoRA
// adapter's A and B. The state goes to trainer/optimizer.hpp's file (save_moments) under the
// tensors' names, so that a run resumes on either device.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cuda/backend.hpp"
#include "trainer/ops/adamw.hpp"
#include "trainer/parameters.hpp"

namespace upcycle::cuda {

// One tensor AdamW trains: device arrays of n elements that outlive the optimizer.
template <class T>
struct TrainedTensor {
  std::string name;  // its moments are saved as exp_avg.NAME and exp_avg_sq.NAME
  Shape shape;
  float* values;     // the fp32 master, updated in place
  T* copy;           // its T copy, which the model reads, rewritten by each step; null: the model reads `values`
  float* grad;
  int64_t n;
  bool decay = true;  // weight decay applies (weight matrices; not norms and biases)
};

// The model's tensors whose gradient in `grads` is not empty (not frozen), by their Hugging Face
// names: masters in `master`, the model's T copies in `model` (buffers, or any weights whose
// data() is T*), gradients in `grads`; all laid out for `config`.
template <class T, class V>
std::vector<TrainedTensor<T>> trained_tensors(DeviceWeights<float>& master, WeightsOf<V>& model,
                                              DeviceWeights<float>& grads, const ModelConfig& config) {
  std::vector<TrainedTensor<T>> out;
  auto w = parameters(master, config);
  auto copy = parameters(model, config);
  auto g = parameters(grads, config);
  for (size_t i = 0; i < w.size(); ++i) {
    if (g[i].values->empty()) continue;
    out.push_back({w[i].tensor.name, w[i].tensor.shape, w[i].values->data(), copy[i].values->data(),
                   g[i].values->data(), int64_t(w[i].values->size()), decays(w[i].tensor.id.role)});
  }
  return out;
}

template <class T>
class AdamW {
 public:
  // Moments start at zero.
  AdamW(std::vector<TrainedTensor<T>> tensors, const ops::AdamWConfig& hyper);

  void zero_grads();
  // Clips the gradients to max_norm (<= 0: no clipping) and returns their norm before it.
  double clip(double max_norm);
  // One update at learning rate lr.
  void step(double lr);
  int64_t steps() const { return steps_; }
  // The moments and the step count in trainer/optimizer.hpp's file (save_moments), and back
  // (InputError naming the file when a tensor is missing, extra or of another shape).
  void save(const std::filesystem::path& file);
  void load(const std::filesystem::path& file);

 private:
  std::vector<TrainedTensor<T>> tensors_;
  ops::AdamWConfig hyper_;
  std::vector<DeviceBuffer<float>> m_, v_;  // per tensor
  int64_t steps_ = 0;
};

}  // namespace upcycle::cuda
