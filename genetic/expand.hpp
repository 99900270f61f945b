// Expert expansion (UpIT's stage 2): grow the pool of checkpoint FFNs to E experts by a genetic
// search. Each round draws candidate children (parents among the most distant pairs, or at
// random for the ablation; random weights a + b = 1; a merge, DARE by default, with its own
// seed), scores the pool each would make by its diversity (mean + minimum pairwise distance) and
// keeps the best. One round is one pass over the FFN tensors. With E <= K it instead keeps the E
// checkpoints that are farthest apart: the most distant pair, then repeatedly the checkpoint
// farthest from those chosen (the largest minimum distance).
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "genetic/distance.hpp"
#include "pool/expert_pool.hpp"

namespace upcycle::genetic {

// The search works on the expert pool's recipes and blocks (pool/).
using pool::describe;
using pool::ExpertRecipe;
using pool::FfnSource;
using pool::kFfnRoles;
using pool::Pool;
using pool::PoolBlock;
using pool::PoolTensor;

enum class ParentChoice { Distant, Random };
std::optional<ParentChoice> parse_parent_choice(std::string_view name);  // "distant", "random"

struct ExpansionOptions {
  int experts = 8;           // E
  int candidates = 8;        // children drawn and scored per round
  int distant_pairs = 3;     // `distant`: parents drawn among this many most distant pairs
  ParentChoice parents = ParentChoice::Distant;
  Distance distance = Distance::Cosine;
  merge::Options merge{merge::Method::Dare};  // the child merge (weights and seed per child)
  uint64_t seed = 0;
  // The distances are measured on at most this many elements of each FFN tensor (0: all): a
  // seeded random choice of its kDotBlock-element blocks, the same in every round, the inner
  // products scaled up to the whole tensor's. An estimate's error depends on the elements
  // measured, not on the tensor's size (README: what 2^18 costs in accuracy and saves in time,
  // measured by scripts/search-sample-accuracy.sh and scripts/bench-convert.sh).
  // Element-wise child merges only: ties and slerp measure all.
  uint64_t sample_elements = uint64_t(1) << 18;
  // Each tensor is read this many elements at a time (a multiple of kDotBlock): the distances'
  // bits do not depend on it.
  uint64_t block_elements = PoolTensor::kBlockElements;
  bool progress = true;
};

struct Expansion {
  Pool pool;                                 // E recipes
  std::vector<std::vector<double>> before;   // distances between the K checkpoints
  std::vector<std::vector<double>> after;    // between the E experts of the pool
};

// std::invalid_argument for options out of range (experts < 1, candidates < 1, ...).
Expansion expand_pool(const FfnSource& source, const ExpansionOptions& opts);

}  // namespace upcycle::genetic
