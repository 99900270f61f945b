#include "pool/expert_pool.hpp"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

namespace upcycle::pool {

std::string describe(const ExpertRecipe& r) {
  if (!r.is_child() && r.redraw > 0) return fmt::format("checkpoint {}, {:.0f}% of neurons re-drawn", r.checkpoint, 100 * r.redraw);
  if (!r.is_child()) return fmt::format("checkpoint {}", r.checkpoint);
  return fmt::format("child of {} and {} ({:.2f}/{:.2f})", r.parent_a, r.parent_b, r.weight_a, r.weight_b);
}

PoolTensor::PoolTensor(const FfnSource& source, const Pool& pool, int layer, Role role, merge::Options child_merge,
                       uint64_t block_elements)
    : source_(source), pool_(pool), key_(FfnSource::key(layer, role)), merge_(std::move(child_merge)) {
  if (block_elements == 0) throw std::invalid_argument("PoolTensor: blocks of 0 elements");
  for (size_t k = 0; k < source.size(); ++k) checkpoints_.push_back(source.tensor(k, layer, role));
  if (source.has_base()) base_ = source.base_tensor(layer, role);
  numel_ = checkpoints_[0].numel();
  std::vector<Tensor> inputs = checkpoints_;
  if (!base_.empty()) inputs.push_back(base_);
  by_element_ = merge::method_info(merge_.method).by_element;
  granule_ = range_block(1, inputs);
  block_ = by_element_ ? std::min(range_block(block_elements, inputs), numel_) : numel_;
  const int64_t intermediate = source.checkpoint(0).config().intermediate_size;
  for (const ExpertRecipe& r : pool) {
    redraws_.emplace_back();
    if (!r.is_child() && r.redraw > 0)
      redraws_.back().emplace(checkpoints_.at(size_t(r.checkpoint)), role, layer, intermediate, r.redraw, r.seed);
  }
}

PoolBlock::PoolBlock(const PoolTensor& tensor)
    : t_(tensor),
      checkpoints_(tensor.checkpoints_.size()),
      experts_(tensor.pool_.size()),
      have_checkpoint_(checkpoints_.size()),
      have_expert_(experts_.size()) {}

void PoolBlock::seek(uint64_t first, uint64_t size) {
  const bool whole = first == 0 && size == t_.numel_;
  if (first % t_.granule_ || size > t_.block_ || first + size > t_.numel_ || (!t_.by_element_ && !whole))
    throw std::logic_error("PoolBlock::seek: not a part of the tensor it can make");
  first_ = first;
  size_ = size_t(size);
  std::fill(have_checkpoint_.begin(), have_checkpoint_.end(), 0);
  std::fill(have_expert_.begin(), have_expert_.end(), 0);
  have_base_ = false;
}

std::span<float> PoolBlock::buffer(std::vector<float>& b) const {
  if (b.size() < size_) b.resize(size_);
  return std::span(b).first(size_);
}

std::span<const float> PoolBlock::checkpoint(size_t k) {
  const std::span<float> out = buffer(checkpoints_.at(k));
  if (!have_checkpoint_[k]) {
    t_.checkpoints_[k].to_f32_range(first_, out);
    t_.checkpoints_[k].release(first_, size_);  // read once per block: no need to stay resident
  }
  have_checkpoint_[k] = 1;
  return out;
}

std::span<const float> PoolBlock::base() {
  const std::span<float> out = buffer(base_);
  if (have_base_) return out;
  have_base_ = true;
  if (t_.source_.has_base()) {
    t_.base_.to_f32_range(first_, out);
    t_.base_.release(first_, size_);
  } else {
    std::vector<std::span<const float>> all;
    for (size_t k = 0; k < checkpoints_.size(); ++k) all.push_back(checkpoint(k));
    FfnSource::mean(all, out);
  }
  return out;
}

std::span<const float> PoolBlock::expert(size_t e) {
  const ExpertRecipe& r = t_.pool_.at(e);
  if (!r.is_child() && r.redraw == 0) return checkpoint(size_t(r.checkpoint));
  const std::span<float> out = buffer(experts_[e]);
  if (have_expert_[e]) return out;
  if (r.is_child()) {
    child(r, out);
  } else {
    const std::span<const float> from = checkpoint(size_t(r.checkpoint));
    std::copy(from.begin(), from.end(), out.begin());
    t_.redraws_[e]->apply(first_, out);
  }
  have_expert_[e] = 1;
  return out;
}

void PoolBlock::child(const ExpertRecipe& r, std::span<float> out) {
  const std::span<const float> inputs[] = {expert(size_t(r.parent_a)), expert(size_t(r.parent_b))};
  merge::Options opts = t_.merge_;
  opts.weights = {r.weight_a, r.weight_b};
  opts.seed = r.seed;
  const bool with_base = merge::method_info(opts.method).needs_base;
  merge::merge_tensor(out, inputs, with_base ? this->base() : std::span<const float>(), opts, t_.key_, first_);
}

std::vector<float> whole_expert(const PoolTensor& t, size_t e) {
  std::vector<float> out(t.numel());
  const uint64_t block = t.block_elements();
  // One block alone (ties, slerp: the whole tensor) runs on this thread, whose merge may use them all.
#pragma omp parallel if (t.blocks() > 1)
  {
    PoolBlock b(t);  // one per thread: its buffers serve every block the thread makes
#pragma omp for schedule(static)
    for (int64_t i = 0; i < int64_t(t.blocks()); ++i) {
      const uint64_t first = uint64_t(i) * block;
      b.seek(first, std::min(block, t.numel() - first));
      const std::span<const float> x = b.expert(e);
      std::copy(x.begin(), x.end(), out.begin() + ptrdiff_t(first));
    }
  }
  return out;
}

}  // namespace upcycle::pool
