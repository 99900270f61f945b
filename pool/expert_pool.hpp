// The expert pool as recipes: an expert is one checkpoint's FFN, or a child merged from two
// experts earlier in the pool. Recipes are tiny, so the search keeps them and any block of any
// expert is made again on demand when distances are measured or the MoE is written: memory
// stays a few blocks per thread whatever the model's size.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "merge/merge.hpp"
#include "pool/ffn_source.hpp"
#include "pool/redraw.hpp"

namespace upcycle::pool {

struct ExpertRecipe {
  int checkpoint = -1;               // >= 0: that checkpoint's FFN (with `redraw` of its neurons re-drawn)
  int parent_a = -1, parent_b = -1;  // else a child of two earlier experts of the pool
  double weight_a = 0, weight_b = 0;
  uint64_t seed = 0;                 // the child merge's seed (DARE's masks), or the re-draw's
  double redraw = 0;                 // drop-upcycling: this fraction of the FFN's neurons re-drawn
  bool is_child() const { return checkpoint < 0; }
};
using Pool = std::vector<ExpertRecipe>;

// "checkpoint 2", "child of 0 and 3 (0.41/0.59)", "checkpoint 0, 50% of neurons re-drawn"
std::string describe(const ExpertRecipe& r);

// One (layer, role) of the pool: the checkpoints' tensors (views of their files), the base, and
// what a recipe needs of the whole tensor (drop-upcycling's neurons and statistics), from which
// PoolBlock makes any block of any expert, or of a candidate child, out of the same block of the
// checkpoints alone. Immutable once made: threads share it, each with its own PoolBlock.
class PoolTensor {
 public:
  // The default elements per block: a multiple of the distances' dot blocks and of every
  // quantization block (blocks of quantized checkpoints are rounded up to theirs).
  static constexpr uint64_t kBlockElements = uint64_t(1) << 16;

  PoolTensor(const FfnSource& source, const Pool& pool, int layer, Role role, merge::Options child_merge,
             uint64_t block_elements = kBlockElements);
  uint64_t numel() const { return numel_; }
  // Elements per block, or the whole tensor when the child merge ranks the whole tensor (ties,
  // slerp) or is smaller than one block.
  uint64_t block_elements() const { return block_; }
  uint64_t blocks() const { return (numel_ + block_ - 1) / block_; }
  const Pool& pool() const { return pool_; }

 private:
  friend class PoolBlock;
  const FfnSource& source_;
  const Pool& pool_;
  std::string key_;  // the tensor's name: the key of its random streams
  merge::Options merge_;
  std::vector<Tensor> checkpoints_;
  Tensor base_;                                 // the base model's (has_base() only)
  std::vector<std::optional<Redraw>> redraws_;  // per pool member
  uint64_t numel_, block_;
  uint64_t granule_;  // parts start at multiples of this: the checkpoints' largest quantization block
  bool by_element_;   // the child merge is element-wise (else children are made whole only)
};

// The pool's values over one block [first, first + size) of a PoolTensor, each made on first use
// and kept until seek(): checkpoints converted to f32, children merged from their parents'
// blocks. Buffers are reused from block to block.
class PoolBlock {
 public:
  explicit PoolBlock(const PoolTensor& tensor);
  // Any part of at most block_elements() that starts on a quantization block of the checkpoints;
  // the whole tensor for merges that rank or measure it whole (ties, slerp).
  void seek(uint64_t first, uint64_t size);
  uint64_t first() const { return first_; }
  size_t size() const { return size_; }
  std::span<const float> base();  // the base model's block, or the checkpoints' mean
  std::span<const float> expert(size_t e);
  // A child of this pool that is not (yet) in it.
  void child(const ExpertRecipe& r, std::span<float> out);

 private:
  std::span<const float> checkpoint(size_t k);
  std::span<float> buffer(std::vector<float>& b) const;  // b sized to the block
  const PoolTensor& t_;
  uint64_t first_ = 0;
  size_t size_ = 0;
  std::vector<std::vector<float>> checkpoints_, experts_;  // experts_: children and re-drawn copies
  std::vector<float> base_;
  std::vector<char> have_checkpoint_, have_expert_;
  bool have_base_ = false;
};

// Expert e of the tensor's pool, whole ([numel]): its blocks made in parallel, the same values a
// writer of the assembled MoE gets.
std::vector<float> whole_expert(const PoolTensor& t, size_t e);

}  // namespace upcycle::pool
