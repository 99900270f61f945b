// Expert expansion over LoRA adapters (UpIT's main setting): the pool's experts are the FFN terms
// dW = s·B·A of intermediate adapters (gate_proj, up_proj, down_proj per layer), and the search is
// expand's, on deltas held as factors. Distances come from r x r products
// (merge::delta_inner), never materialising a dW; a child is merged on its parents' dense dW (a
// DARE child: drop and rescale, as in the FFN case) and refactored to the pool's rank by a sketched
// truncated SVD (merge::sketch_delta), with the energy it discards reported; or, with
// LoraChild::Concat, kept exact at the parents' summed rank (a linear merge alone).
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "genetic/search_steps.hpp"
#include "merge/low_rank.hpp"

namespace upcycle::genetic {

// gate_proj, up_proj, down_proj: the order of an expert's terms in a layer.
inline constexpr int kLoraFfnModules = 3;

// One expert's FFN terms, [layer · 3 + module]; a module its adapter lacks is a zero term.
using LoraTerms = std::vector<merge::LowRankFactors>;

struct LoraFfnPool {
  int layers = 0;
  std::array<std::array<int64_t, 2>, kLoraFfnModules> shapes{};  // [out, in] of gate, up and down
  int64_t rank = 0;              // a refactored child's
  std::vector<LoraTerms> experts;  // the K adapters'
};

enum class LoraChild { Svd, Concat };
std::optional<LoraChild> parse_lora_child(std::string_view name);  // "svd", "concat"

struct LoraExpansion {
  Pool pool;                        // E recipes (checkpoint: the adapter's index)
  std::vector<LoraTerms> experts;   // their terms
  Distances before, after;          // between the K adapters; between the E experts
  // Per expert: the largest share of a term's ‖dW‖² its refactoring to the pool's rank discarded
  // (0 for an adapter and a concatenated child).
  std::vector<double> discarded;
};

// o's experts, candidates, distant_pairs, parents, distance, merge and seed as expand_pool reads
// them (Fitness::Weights only; sample_elements unused: the distances are exact).
// std::invalid_argument for those out of range, Fitness::Function, fewer than two adapters when
// the pool grows, terms not of the pool's shapes, or Concat with a merge other than linear (the
// only merge the factors give exactly).
LoraExpansion expand_lora_pool(const LoraFfnPool& adapters, const ExpansionOptions& o, LoraChild child);

}  // namespace upcycle::genetic
