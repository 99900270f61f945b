#include "genetic/pool.hpp"

#include <cmath>

#include <fmt/format.h>

#include "core/random.hpp"

namespace upcycle::genetic {

std::string describe(const ExpertRecipe& r) {
  if (!r.is_child() && r.redraw > 0) return fmt::format("checkpoint {}, {:.0f}% of neurons re-drawn", r.checkpoint, 100 * r.redraw);
  if (!r.is_child()) return fmt::format("checkpoint {}", r.checkpoint);
  return fmt::format("child of {} and {} ({:.2f}/{:.2f})", r.parent_a, r.parent_b, r.weight_a, r.weight_b);
}

void redraw_neurons(std::vector<float>& t, Role role, int layer, int64_t intermediate, double ratio, uint64_t seed) {
  const int64_t I = intermediate, other = int64_t(t.size()) / I;
  // The neurons: a seeded partial Fisher-Yates shuffle of [0, I).
  std::vector<int64_t> order(static_cast<size_t>(I));
  for (int64_t i = 0; i < I; ++i) order[size_t(i)] = i;
  Rng pick = Rng::stream(seed, "drop-upcycling neurons, layer " + std::to_string(layer));
  const int64_t count = std::llround(ratio * double(I));
  for (int64_t i = 0; i < count; ++i) std::swap(order[size_t(i)], order[size_t(i) + pick.below(uint64_t(I - i))]);
  double sum = 0, sq = 0;
  for (float v : t) sum += v, sq += double(v) * v;
  const double mean = sum / double(t.size()), sd = std::sqrt(std::max(0.0, sq / double(t.size()) - mean * mean));
  Rng draw = Rng::stream(seed, "drop-upcycling values, " + FfnSource::key(layer, role));
  for (int64_t n = 0; n < count; ++n) {
    const int64_t i = order[size_t(n)];
    for (int64_t j = 0; j < other; ++j) {
      const size_t at = role == Role::Down ? size_t(j * I + i) : size_t(i * other + j);  // down [H, I]; gate, up [I, H]
      t[at] = float(mean + sd * draw.normal());
    }
  }
}

PoolTensors::PoolTensors(const FfnSource& source, const Pool& pool, int layer, Role role, merge::Options child_merge)
    : source_(source), pool_(pool), layer_(layer), role_(role), merge_(std::move(child_merge)) {}

const std::vector<float>& PoolTensors::checkpoint(size_t k) {
  auto it = checkpoints_.find(k);
  if (it == checkpoints_.end()) it = checkpoints_.emplace(k, source_.load(k, layer_, role_)).first;
  return it->second;
}

// The mean from the checkpoints' tensors this object holds anyway, rather than read again.
const std::vector<float>& PoolTensors::base() {
  if (!base_.empty()) return base_;
  if (source_.has_base()) return base_ = source_.base(layer_, role_);
  std::vector<const std::vector<float>*> all;
  for (size_t k = 0; k < source_.size(); ++k) all.push_back(&checkpoint(k));
  return base_ = FfnSource::mean(all);
}

const std::vector<float>& PoolTensors::expert(size_t e) {
  const ExpertRecipe& r = pool_.at(e);
  if (!r.is_child() && r.redraw == 0) return checkpoint(size_t(r.checkpoint));
  auto it = experts_.find(e);
  if (it != experts_.end()) return it->second;
  std::vector<float> t = r.is_child() ? child(r) : checkpoint(size_t(r.checkpoint));
  if (r.redraw > 0)
    redraw_neurons(t, role_, layer_, source_.checkpoint(0).config().intermediate_size, r.redraw, r.seed);
  return experts_.emplace(e, std::move(t)).first->second;
}

std::vector<float> PoolTensors::child(const ExpertRecipe& r) {
  const std::vector<float>& a = expert(size_t(r.parent_a));
  const std::vector<float>& b = expert(size_t(r.parent_b));
  merge::Options opts = merge_;
  opts.weights = {r.weight_a, r.weight_b};
  opts.seed = r.seed;
  const std::span<const float> inputs[] = {a, b};
  std::vector<float> out(a.size());
  const std::span<const float> base = merge::needs_base(opts.method) ? std::span<const float>(this->base()) : std::span<const float>();
  merge::merge_tensor(out, inputs, base, opts, FfnSource::key(layer_, role_));
  return out;
}

}  // namespace upcycle::genetic
