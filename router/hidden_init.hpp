// The `hidden` router init (mergekit's gate mode of that name; UpIT's ablation): expert e's row
// in layer l is the mean router input (the hidden state after attention and the post-attention
// norm) over the tokens of expert e's seed samples, scaled to unit length. The inputs come from
// expert e's own dense model, the model those samples were found to suit.
#pragma once
#include <cstdint>
#include <vector>

#include "text/tokenized_data.hpp"
#include "trainer/engine.hpp"

namespace upcycle::router {

// Per layer [E·H], the MoE given by (config, moe), the dense models run on engines of `make`. An
// expert with no samples gets the mean over all seed samples.
std::vector<std::vector<float>> hidden_state_routers(const ModelConfig& config, const Weights<float>& moe,
                                                     EngineFactory make, const TokenizedData& seed,
                                                     const std::vector<int32_t>& assignment, int64_t seq_len);

}  // namespace upcycle::router
