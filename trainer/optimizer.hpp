// AdamW over fp32 master tensors: the model's (no weight decay on norms and biases, frozen
// tensors left out and without moments) or any others, such as a LoRA adapter's A and B.
#pragma once
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "trainer/ops/adamw.hpp"
#include "trainer/parameters.hpp"

namespace upcycle {

// One tensor AdamW trains: its name (its moments are saved as exp_avg.NAME and exp_avg_sq.NAME),
// shape, values (updated in place) and gradient, which must outlive the optimizer and keep their
// sizes.
struct TrainedTensor {
  std::string name;
  Shape shape;
  std::span<float> values, grad;
  bool decay = true;  // weight decay applies (weight matrices; not norms and biases)
  std::span<uint16_t> bf16_copy = {};  // where not empty, the values rounded to bf16, kept in step by each update
};

// Each tensor of `grads` that is not empty (not frozen) with its master in `weights`, by its
// Hugging Face name; with its bf16 copy where `bf16_copies` (bf16 training) holds one.
std::vector<TrainedTensor> trained_tensors(Weights<float>& weights, Weights<float>& grads, const ModelConfig& config,
                                           Weights<uint16_t>* bf16_copies = nullptr);

// A trained tensor's moments, by its name: f32 (m, v) or bf16 (m16, v16; the others null).
struct MomentSlot {
  std::string name;
  Shape shape;
  std::vector<float>*m, *v;
  std::vector<uint16_t>*m16 = nullptr, *v16 = nullptr;
};

// AdamW's state in one safetensors file: exp_avg.NAME and exp_avg_sq.NAME for each slot, in the
// slots' dtype, and the step count in the metadata. load_moments fills the slots and returns the
// step count; InputError naming the file when a tensor is missing, extra, of another shape or
// of another dtype (a run resumes with the moments it saved).
void save_moments(const std::filesystem::path& file, std::span<const MomentSlot> slots, int64_t steps);
int64_t load_moments(const std::filesystem::path& file, std::span<const MomentSlot> slots);
// The same over a model's moments (the tensors non-empty in m and v), for the GPU's AdamW.
void save_moments(const std::filesystem::path& file, Weights<float>& m, Weights<float>& v, const ModelConfig& config,
                  int64_t steps);
int64_t load_moments(const std::filesystem::path& file, Weights<float>& m, Weights<float>& v,
                     const ModelConfig& config);

// hyper.bf16_moments holds m and v in bf16 (ops::adamw_step_bf16_moments), each tensor's rounding
// draws seeded by its place and the step.
class AdamW {
 public:
  AdamW(std::vector<TrainedTensor> tensors, const ops::AdamWConfig& hyper);

  const std::vector<TrainedTensor>& tensors() const { return tensors_; }
  void zero_grads();
  // Clips the gradients to max_norm (<= 0: no clipping) and returns their norm before it. The
  // scaling (ops::clip_scale) is applied by step(), in its own pass over them, until zero_grads().
  double clip(double max_norm);
  // One update at learning rate lr.
  void step(double lr);
  int64_t steps() const { return steps_; }

  // The moments and the step count (save_moments above), and back.
  void save(const std::filesystem::path& file) { save_moments(file, slots(), steps_); }
  void load(const std::filesystem::path& file) { steps_ = load_moments(file, slots()); }

 private:
  std::vector<MomentSlot> slots();

  std::vector<TrainedTensor> tensors_;
  ops::AdamWConfig hyper_;
  std::vector<std::vector<float>> m_, v_;         // per tensor, f32 moments
  std::vector<std::vector<uint16_t>> m16_, v16_;  // or bf16 ones
  int64_t steps_ = 0;
  float grad_scale_ = 1;  // clip's, until zero_grads()
};

}  // namespace upcycle
