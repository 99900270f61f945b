// UpIT's router pre-optimisation: only the routers train (everything else frozen), on the seed
// data, with 0.5 × the MoE's language-model loss + 0.5 × a binary cross-entropy that pushes
// sigmoid(router logit e) toward 1 on the tokens of expert e's samples and toward 0 elsewhere,
// for a few epochs; every layer's router gets the same targets.
#pragma once
#include <cstdint>
#include <vector>

#include "text/tokenized_data.hpp"
#include "trainer/engine.hpp"

namespace upcycle::router {

struct PreoptOptions {
  int64_t epochs = 4;
  double lr = 1e-3;        // AdamW, constant (the paper gives none)
  double lm_coef = 0.5;    // weight of the MoE's cross-entropy
  double bce_coef = 0.5;   // weight of the routers' binary cross-entropy
  int64_t seq_len = 2048;
  int64_t batch_tokens = 4096;
  uint64_t seed = 0;       // the seed data's order
  bool recompute = true;   // LossOptions::recompute: one layer's activations held, for one more forward
  bool progress = true;
};

struct PreoptResult {
  int64_t steps = 0;
  double first_bce = 0, last_bce = 0;  // the BCE term (times its coef) of the first and last step
  double first_ce = 0, last_ce = 0;    // the LM loss per counted token
};

// The training setup of the pre-optimisation: every part frozen but the routers, no weight decay.
TrainSetup router_training();

// Trains the routers of the MoE on `moe`, an engine made with router_training(); the routers are
// then its host_weights()' routers. assignment[s] is seed sample s's expert. All tokens of a
// sample (prompt and response: the router sees both) carry its expert as the target.
PreoptResult preoptimise_routers(Engine& moe, const TokenizedData& seed, const std::vector<int32_t>& assignment,
                                 const PreoptOptions& opts);

}  // namespace upcycle::router
