// UpIT's seed assignment: every seed sample scored under every expert's own dense model (the
// MoE's shared weights with that expert's FFN in every layer) by its loss on the counted
// (response) tokens, and given to the expert with the lowest.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "text/tokenized_data.hpp"
#include "trainer/engine.hpp"

namespace upcycle::router {

struct Assignment {
  std::vector<int32_t> expert;             // [S] the expert of each sample (lowest loss, lowest index on ties)
  std::vector<std::vector<double>> loss;   // [S][E] mean loss per counted token
  std::vector<int64_t> counts;             // [E] samples per expert
};

// One FFN per layer: gate [I, H], up [I, H], down [H, I].
struct Ffn {
  std::vector<float> gate, up, down;
};

// The dense model of an MoE's (config, weights) shared weights with ffn[l] as layer l's FFN: its
// config as llama (or mistral). `name` names it in errors.
EngineSpec dense_model_with(const ModelConfig& config, const Weights<float>& moe, std::vector<Ffn> ffn, std::string name);

// The dense model of expert e of an MoE: its shared weights and expert e's FFN.
EngineSpec expert_dense_model(const ModelConfig& config, const Weights<float>& moe, int expert);

// A dense model's loss on each seed sample ([S]: the mean per counted token, +inf for a sample
// with none), one sample at a time. `progress` (may be empty) is told each sample done.
std::vector<double> seed_losses(Engine& dense, const TokenizedData& seed, int64_t seq_len,
                                const std::function<void()>& progress = {});

// Each expert's dense model runs on an engine of `make`. Samples with no counted token get the
// loss +inf everywhere and go to expert 0. `progress` (may be empty) is told each (expert,
// sample) done.
Assignment assign_by_loss(const ModelConfig& config, const Weights<float>& moe, EngineFactory make,
                          const TokenizedData& seed, int64_t seq_len, const std::function<void()>& progress = {});

// The ablation of the assignment: each sample to an expert drawn uniformly (seeded), the losses
// kept; counts recomputed.
void assign_at_random(Assignment& a, uint64_t seed);

// The losses by expert: [E][S] of a.loss's [S][E].
std::vector<std::vector<double>> losses_by_expert(const Assignment& a);

}  // namespace upcycle::router
