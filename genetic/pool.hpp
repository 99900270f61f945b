// The expert pool as recipes: an expert is one checkpoint's FFN, or a child merged from two
// experts earlier in the pool. Recipes are tiny, so the search keeps them and any tensor of any
// expert is made again on demand, one (layer, role) at a time, when distances are measured or
// the MoE is written.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "genetic/ffn_source.hpp"
#include "merge/merge.hpp"

namespace upcycle::genetic {

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

// Drop-upcycling (Nakamura et al. 2025): a seeded random `ratio` of the layer's FFN neurons (rows
// of gate and up [I, H], the same columns of down [H, I]) re-drawn from a normal with the tensor's
// own mean and standard deviation. The neurons depend on (seed, layer) only, so gate, up and down
// agree.
void redraw_neurons(std::vector<float>& t, Role role, int layer, int64_t intermediate, double ratio, uint64_t seed);

// The pool's tensors of one (layer, role), made on first use and kept: checkpoints read, children
// merged from their parents with `child_merge` (its weights and seed come from each recipe).
class PoolTensors {
 public:
  PoolTensors(const FfnSource& source, const Pool& pool, int layer, Role role, merge::Options child_merge);
  const std::vector<float>& base();  // the base model's tensor, or the checkpoints' mean
  const std::vector<float>& expert(size_t e);
  // A child of this pool that is not (yet) in it.
  std::vector<float> child(const ExpertRecipe& r);

 private:
  const FfnSource& source_;
  const Pool& pool_;
  int layer_;
  Role role_;
  merge::Options merge_;
  const std::vector<float>& checkpoint(size_t k);
  std::vector<float> base_;
  std::map<size_t, std::vector<float>> checkpoints_, experts_;  // experts_: children and re-drawn copies
};

}  // namespace upcycle::genetic
