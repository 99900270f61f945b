// UpIT's seed assignment: every seed sample scored under every expert's own dense model (the
// MoE's shared weights with that expert's FFN in every layer) by its loss on the counted
// (response) tokens, and given to the expert with the lowest.
#pragma once
#include <cstdint>
#include <vector>

#include "text/tokenized_data.hpp"
#include "trainer/engine.hpp"

namespace upcycle::router {

struct Assignment {
  std::vector<int32_t> expert;             // [S] the expert of each sample (lowest loss, lowest index on ties)
  std::vector<std::vector<double>> loss;   // [S][E] mean loss per counted token
  std::vector<int64_t> counts;             // [E] samples per expert
};

// The dense model of expert e of an MoE (config, weights): its config as llama (or mistral) with
// the MoE's shared weights and expert e's FFN as the dense FFN.
EngineSpec expert_dense_model(const ModelConfig& config, const Weights<float>& moe, int expert);

// Each expert's dense model runs on an engine of `make`. Samples with no counted token get the
// loss +inf everywhere and go to expert 0. `progress` (may be empty) is told each (expert,
// sample) done.
Assignment assign_by_loss(const ModelConfig& config, const Weights<float>& moe, EngineFactory make,
                          const TokenizedData& seed, int64_t seq_len, const std::function<void()>& progress = {});

// The ablation of the assignment: each sample to an expert drawn uniformly (seeded), the losses
// kept; counts recomputed.
void assign_at_random(Assignment& a, uint64_t seed);

// How differently the experts score the seed data, in function rather than in weights: [E][E],
// the mean over samples (those with a finite loss under both) of |loss_i − loss_j| per counted
// token; 0 on the diagonal.
std::vector<std::vector<double>> loss_distances(const Assignment& a);

}  // namespace upcycle::router
