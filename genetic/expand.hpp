// Expert expansion (UpIT's stage 2): grow the pool of checkpoint FFNs to E experts by a genetic
// search. Each round draws candidate children (parents among the most distant pairs, or at
// random for the ablation; random weights a + b = 1; a merge, DARE by default, with its own
// seed), scores the pool each would make by its diversity (mean + minimum pairwise distance) and
// keeps the best. One round is one pass over the FFN tensors. With E <= K it instead keeps the E
// checkpoints that are farthest apart: the most distant pair, then repeatedly the checkpoint
// farthest from those chosen (the largest minimum distance).
// The distance is the paper's, between FFN deltas in weights, or (Fitness::Function) between the
// experts' losses on the seed data: DARE's random drop moves a child far in weights while it
// scores the seed data much as its parents do, so diversity in weights need not be diversity in
// what the experts do.
#pragma once
#include <cstdint>
#include <functional>
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

// What the search's distances are taken between.
enum class Fitness { Weights, Function };
std::optional<Fitness> parse_fitness(std::string_view name);  // "weights", "function"
const char* fitness_name(Fitness f);

// Expert e of `pool` scored on every seed sample ([S]: the mean loss per counted token, +inf for a
// sample with none), by the caller that holds the model and the seed data.
using SeedLosses = std::function<std::vector<double>(const Pool& pool, size_t e)>;

struct ExpansionOptions {
  int experts = 8;           // E
  int candidates = 8;        // children drawn and scored per round
  int distant_pairs = 3;     // `distant`: parents drawn among this many most distant pairs
  ParentChoice parents = ParentChoice::Distant;
  Distance distance = Distance::Cosine;
  Fitness fitness = Fitness::Weights;
  SeedLosses seed_losses;    // Fitness::Function: required (one call per checkpoint and per candidate)
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
  // Fitness::Function: the experts' distances in function (function_distances), as before/after.
  std::vector<std::vector<double>> function_before, function_after;
};

// std::invalid_argument for options out of range (experts < 1, candidates < 1, ...) or
// Fitness::Function without seed_losses.
Expansion expand_pool(const FfnSource& source, const ExpansionOptions& opts);

}  // namespace upcycle::genetic
