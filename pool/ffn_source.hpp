// The dense checkpoints an expert pool grows from: each one's FFN tensors (gate, up, down per
// layer), and the base that deltas are taken from (the pre-tuning model when given, else
// the element-wise mean of the checkpoints).
#pragma once
#include <span>
#include <string>
#include <vector>

#include "core/checkpoint.hpp"
#include "core/tensor_names.hpp"

namespace upcycle::pool {

inline constexpr Role kFfnRoles[] = {Role::Gate, Role::Up, Role::Down};

class FfnSource {
 public:
  // InputError naming the odd one out when the checkpoints (and base) are not dense models of
  // one architecture and shape, or fewer than one is given.
  FfnSource(std::vector<const Checkpoint*> checkpoints, const Checkpoint* base);

  size_t size() const { return checkpoints_.size(); }
  int layers() const { return int(checkpoints_[0]->config().num_hidden_layers); }
  bool has_base() const { return base_ != nullptr; }
  const Checkpoint* base_checkpoint() const { return base_; }  // null when the base is the mean
  const Checkpoint& checkpoint(size_t k) const { return *checkpoints_[k]; }

  Tensor tensor(size_t k, int layer, Role role) const;  // checkpoint k's (a view of its file)
  Tensor base_tensor(int layer, Role role) const;       // the base model's (has_base() only)
  // out = the element-wise mean of equally long tensors, summed in double in their order.
  static void mean(std::span<const std::span<const float>> tensors, std::span<float> out);
  // The tensor's name: the key of its random streams.
  static std::string key(int layer, Role role);

 private:
  std::vector<const Checkpoint*> checkpoints_;
  const Checkpoint* base_;
};

}  // namespace upcycle::pool
