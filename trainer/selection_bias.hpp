// Auxiliary-loss-free load balancing (DeepSeek-V3, `tune --balance bias`): each MoE layer keeps
// a bias per expert, added to the router's probabilities when the top k are chosen
// (ops::router_forward) but never to the gate weights, and after every step nudged toward even
// load: b_e += rate · sign(mean load − load_e). An overloaded expert is chosen less, an idle one
// more, without a loss term pulling on the router.
#pragma once
#include <cstdint>
#include <vector>

namespace upcycle {

using SelectionBias = std::vector<std::vector<float>>;  // [L][E]

// counts [L][E]: the step's routed slots per expert, as LossReport::expert_tokens.
void nudge_selection_bias(SelectionBias& bias, const std::vector<std::vector<int64_t>>& counts, double rate);

}  // namespace upcycle
