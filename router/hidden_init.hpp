// The `hidden` router init (mergekit's gate mode of that name; UpIT's ablation): expert e's row
// in layer l is the mean router input (the hidden state after attention and the post-attention
// norm) over the tokens of expert e's seed samples, scaled to unit length. The inputs come from
// expert e's own dense model, the model those samples were found to suit.
#pragma once
#include <cstdint>
#include <vector>

#include "text/tokenized_data.hpp"
#include "router/assign.hpp"

namespace upcycle::router {

// Per layer [E·H], for the MoE of `config` whose experts' dense models `dense` makes, running
// the samples in passes of batch_tokens. An expert with no samples gets the mean over all seed
// samples.
std::vector<std::vector<float>> hidden_state_routers(const ModelConfig& config, const ExpertEngines& dense,
                                                     const TokenizedData& seed, const std::vector<int32_t>& assignment,
                                                     int64_t seq_len, int64_t batch_tokens);

}  // namespace upcycle::router
