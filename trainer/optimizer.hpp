// AdamW over fp32 master tensors: the model's (no weight decay on norms and biases, frozen
// tensors left out and without moments) or any others, such as a LoRA adapter's A and B.
#pragma once
#include <cstdint>
#include <array>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "parallel/communicator.hpp"
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
// With `others`, the file may hold moments of tensors not in `slots` (another process's share).
int64_t load_moments(const std::filesystem::path& file, std::span<const MomentSlot> slots, bool others = false);
// The same over a model's moments (the tensors non-empty in m and v), for the GPU's AdamW.
void save_moments(const std::filesystem::path& file, Weights<float>& m, Weights<float>& v, const ModelConfig& config,
                  int64_t steps);
int64_t load_moments(const std::filesystem::path& file, Weights<float>& m, Weights<float>& v,
                     const ModelConfig& config);

// hyper.bf16_moments holds m and v in bf16 (ops::adamw_step_bf16_moments), each tensor's rounding
// draws seeded by its place and the step.
//
// Data parallel (spread): the processes of a run each hold every tensor and its summed gradient
// and take the same step. Sharded (ZeRO stage 1), each process keeps the moments of its own
// tensors alone (whole tensors, a contiguous run of about 1/size of the elements) and updates
// them alone: the gradients' sums go to their owners only, clip's norm is summed over the
// processes, and step() sends every updated tensor from its owner to the others.
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

  // Over the processes of `comm` (which must outlive it), sharded or not: before any step or load.
  void spread(Communicator& comm, bool sharded);
  // The gradients summed over the processes (each tensor's with its owner alone when sharded).
  void sum_gradients();
  // Bytes this process sends each step: the gradients' sums, and when sharded the updates.
  double bytes_sent_per_step() const;
  // Elements whose moments this process holds, of `total` (every trained element).
  int64_t held_elements(int64_t* total = nullptr) const;
  // Sharded, on every process but the first: sends its moments to the first, whose save() writes
  // them; called while the first saves (nothing to do unsharded or on the first).
  void serve_save();

  // The moments and the step count (save_moments above), and back: sharded, save() (on the first
  // process) writes every moment, the others' as they send them (serve_save), a tensor at a time,
  // and load() takes this process's share from a file of every moment (written at any N).
  void save(const std::filesystem::path& file);
  void load(const std::filesystem::path& file) { steps_ = load_moments(file, slots(), sharded_); }

 private:
  std::vector<MomentSlot> slots();  // the tensors whose moments this process holds
  bool owns(size_t i) const { return !sharded_ || owner_[i] == comm_->rank(); }
  void place();
  std::array<std::span<std::byte>, 2> moment_bytes(size_t i);
  std::vector<std::span<float>> grads() const;
  std::vector<std::span<float>> values() const;

  std::vector<TrainedTensor> tensors_;
  ops::AdamWConfig hyper_;
  bool placed_ = false;                           // the moments made (place())
  std::vector<std::vector<float>> m_, v_;         // per tensor, f32 moments (empty: not held)
  std::vector<std::vector<uint16_t>> m16_, v16_;  // or bf16 ones
  int64_t steps_ = 0;
  float grad_scale_ = 1;  // clip's, until zero_grads()
  Communicator* comm_ = nullptr;
  bool sharded_ = false;
  std::vector<int> owner_;      // [tensor] its process, when sharded
  std::vector<size_t> bounds_;  // [size + 1] the owners' runs of the tensors' elements taken in order
};

}  // namespace upcycle
