// The steps of the expert search that need only a distance matrix, shared by the search over
// checkpoint FFNs (expand) and the one over LoRA adapters (lora_expand).
#pragma once
#include <cstddef>
#include <utility>
#include <vector>

#include "genetic/expand.hpp"

namespace upcycle::genetic {

using Distances = std::vector<std::vector<double>>;  // [n][n], symmetric

// Candidate children of one round among the pool `dist` measures: parents among the
// o.distant_pairs most distant pairs (or any pair: ParentChoice::Random), weights a + b = 1 with
// a uniform in [0, 1), a seed each; o.candidates of them, from o.seed and the round alone.
Pool draw_candidates(const Distances& dist, const ExpansionOptions& o, int round);

// E <= K: the farthest-point choice of checkpoints: the most distant pair, then repeatedly the
// one farthest from those chosen (the largest minimum distance); in index order.
Pool choose_farthest(const Distances& dist, int experts);

// dist's rows and columns of the pool's checkpoints.
Distances submatrix(const Distances& dist, const Pool& pool);

// `all` holds n pool members and then the candidates: the candidate whose pool (the n and it) is
// the most diverse (the first on ties), and that pool's diversity.
std::pair<size_t, Diversity> best_candidate(const Distances& all, size_t n, size_t candidates);

}  // namespace upcycle::genetic
