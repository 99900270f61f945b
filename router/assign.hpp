// UpIT's seed assignment: every seed sample scored under every expert's own dense model (the
// MoE's shared weights with that expert's FFN in every layer) by its loss on the counted
// (response) tokens, and given to the expert with the lowest.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
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

// One FFN per layer: gate [I, H], up [I, H], down [H, I], each a buffer V.
template <class V>
struct FfnOf {
  V gate, up, down;
};
using Ffn = FfnOf<std::vector<float>>;

// The config of an MoE's dense models: llama, mistral, qwen2 or qwen3, the MoE's fields dropped
// (qwen2_moe's shared expert too). `name` names it in errors.
ModelConfig dense_config(const ModelConfig& moe, const std::string& name);

// The MoE's shared weights (copied: views where V is one) with ffn[l] as layer l's FFN.
template <class V>
WeightsOf<V> dense_weights_with(const WeightsOf<V>& moe, std::vector<FfnOf<V>> ffn) {
  if (ffn.size() != moe.layers.size()) throw std::invalid_argument("dense_weights_with: not an FFN per layer");
  WeightsOf<V> d{moe.embedding, {}, moe.final_norm, moe.lm_head};
  for (size_t l = 0; l < moe.layers.size(); ++l) {
    LayerWeightsOf<V> x = moe.layers[l];  // every shared tensor, whatever the layer holds
    x.router = {};
    x.shared_gate = {}, x.shared_up = {}, x.shared_down = {}, x.shared_router = {};  // its checkpoint's has none
    x.expert_gate.clear(), x.expert_up.clear(), x.expert_down.clear();
    x.gate = std::move(ffn[l].gate), x.up = std::move(ffn[l].up), x.down = std::move(ffn[l].down);
    d.layers.push_back(std::move(x));
  }
  return d;
}

// The MoE's shared weights with expert e's FFN in every layer; std::invalid_argument for no such
// expert.
template <class V>
WeightsOf<V> expert_dense_weights(const WeightsOf<V>& moe, int expert) {
  std::vector<FfnOf<V>> ffn;
  for (const LayerWeightsOf<V>& l : moe.layers) {
    if (expert < 0 || size_t(expert) >= l.expert_gate.size())
      throw std::invalid_argument("expert_dense_weights: not an expert of the MoE");
    ffn.push_back({l.expert_gate[size_t(expert)], l.expert_up[size_t(expert)], l.expert_down[size_t(expert)]});
  }
  return dense_weights_with(moe, std::move(ffn));
}

// The dense model of an MoE's (config, weights) shared weights with ffn[l] as layer l's FFN.
EngineSpec dense_model_with(const ModelConfig& config, const Weights<float>& moe, std::vector<Ffn> ffn, std::string name);

// The dense model of expert e of an MoE: its shared weights and expert e's FFN.
EngineSpec expert_dense_model(const ModelConfig& config, const Weights<float>& moe, int expert);

// An engine of expert e's dense model, made when asked (one at a time, each dropped when done).
using ExpertEngines = std::function<std::unique_ptr<Engine>(int expert)>;

// A dense model's loss on each seed sample ([S]: the mean per counted token, +inf for a sample
// with none), the samples packed into passes of at most batch_tokens (a sample's loss is the one
// it has alone, to the rounding of products of other sizes). `progress` (may be empty) is told
// each sample done.
std::vector<double> seed_losses(Engine& dense, const TokenizedData& seed, int64_t seq_len, int64_t batch_tokens,
                                const std::function<void()>& progress = {});

// Each of the E experts' dense models scores the seed. Samples with no counted token get the
// loss +inf everywhere and go to expert 0. `progress` (may be empty) is told each (expert,
// sample) done.
Assignment assign_by_loss(int experts, const ExpertEngines& dense, const TokenizedData& seed, int64_t seq_len,
                          int64_t batch_tokens, const std::function<void()>& progress = {});

// The ablation of the assignment: each sample to an expert drawn uniformly (seeded), the losses
// kept; counts recomputed.
void assign_at_random(Assignment& a, uint64_t seed);

// The losses by expert: [E][S] of a.loss's [S][E].
std::vector<std::vector<double>> losses_by_expert(const Assignment& a);

}  // namespace upcycle::router
