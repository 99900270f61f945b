#include "pool/redraw.hpp"

#include <algorithm>
#include <cmath>

#include "core/random.hpp"
#include "pool/ffn_source.hpp"

namespace upcycle::pool {

Redraw::Redraw(const Tensor& t, Role role, int layer, int64_t intermediate, double ratio, uint64_t seed)
    : drawn_(size_t(intermediate), 0),
      intermediate_(intermediate),
      other_(int64_t(t.numel()) / intermediate),
      columns_(role == Role::Down),
      state_(Rng::stream(seed, "drop-upcycling values, " + FfnSource::key(layer, role)).next()) {
  // The neurons: a seeded partial Fisher-Yates shuffle of [0, I).
  std::vector<int64_t> order(static_cast<size_t>(intermediate));
  for (int64_t i = 0; i < intermediate; ++i) order[size_t(i)] = i;
  Rng pick = Rng::stream(seed, "drop-upcycling neurons, layer " + std::to_string(layer));
  const int64_t count = std::llround(ratio * double(intermediate));
  for (int64_t i = 0; i < count; ++i) {
    std::swap(order[size_t(i)], order[size_t(i) + pick.below(uint64_t(intermediate - i))]);
    drawn_[size_t(order[size_t(i)])] = 1;
  }
  // Sums in element order, a block at a time.
  double sum = 0, sq = 0;
  std::vector<float> block(std::min<uint64_t>(t.numel(), uint64_t(1) << 20));
  for (uint64_t lo = 0; lo < t.numel(); lo += block.size()) {
    const std::span<float> part = std::span(block).first(std::min<uint64_t>(block.size(), t.numel() - lo));
    t.to_f32_range(lo, part);
    for (float v : part) sum += v, sq += double(v) * v;
  }
  const double n = double(std::max<uint64_t>(1, t.numel()));
  mean_ = sum / n;
  sd_ = std::sqrt(std::max(0.0, sq / n - mean_ * mean_));
}

void Redraw::apply(uint64_t first, std::span<float> block) const {
  for (size_t j = 0; j < block.size(); ++j) {
    const uint64_t at = first + j;
    const uint64_t neuron = columns_ ? at % uint64_t(intermediate_) : at / uint64_t(other_);
    if (!drawn_[neuron]) continue;
    // Element `at` draws splitmix numbers 2·at + 1 and 2·at + 2 of the stream: its own two.
    Rng rng(state_ + 2 * at * 0x9e3779b97f4a7c15ull);
    block[j] = float(mean_ + sd_ * rng.normal());
  }
}

}  // namespace upcycle::pool
