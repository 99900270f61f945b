// Drop-upcycling (Nakamura et al. 2025): a seeded random `ratio` of a layer's FFN neurons (rows of
// gate and up [I, H], the same columns of down [H, I]) re-drawn from a normal with the tensor's
// own mean and standard deviation. The neurons depend on (seed, layer) only, so gate, up and down
// agree; each re-drawn value depends on (seed, tensor, element) alone, so any block of the tensor
// is re-drawn by itself.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.hpp"
#include "core/tensor_names.hpp"

namespace upcycle::pool {

class Redraw {
 public:
  // One pass over `t` (the checkpoint's tensor) for its mean and standard deviation.
  Redraw(const Tensor& t, Role role, int layer, int64_t intermediate, double ratio, uint64_t seed);
  // Re-draws the chosen neurons' elements among [first, first + block.size()) of the tensor.
  void apply(uint64_t first, std::span<float> block) const;

 private:
  std::vector<char> drawn_;  // [I]: whether neuron i is re-drawn
  int64_t intermediate_, other_;
  bool columns_;             // down [H, I]: a neuron is a column
  double mean_ = 0, sd_ = 0;
  uint64_t state_;           // of the values' counter-based stream
};

}  // namespace upcycle::pool
