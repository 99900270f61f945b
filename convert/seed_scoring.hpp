// The expert search's measure in function (genetic::Fitness::Function): any expert of a pool, or
// a candidate child, scored on the seed data as a dense model: the MoE's shared weights, as the
// assembly makes them, with that expert's FFN, the one the assembly would write, in every layer.
#pragma once
#include <cstdint>
#include <vector>

#include "convert/assemble.hpp"
#include "text/tokenized_data.hpp"
#include "trainer/engine.hpp"
#include "trainer/weights.hpp"

namespace upcycle {

class SeedScorer {
 public:
  // Holds the shared weights in f32 (the checkpoints' MoE, loaded once, its experts dropped) and
  // one dense model while a call runs, which scores the seed in passes of batch_tokens. `seed`
  // and `source` must outlive it.
  SeedScorer(const pool::FfnSource& source, const AssemblyOptions& assembly, EngineFactory engine, const TokenizedData& seed,
             int64_t seq_len, int64_t batch_tokens);

  // Expert e of `pool` on each seed sample: [S], the mean loss per counted token (+inf for a
  // sample with none), as genetic::SeedLosses asks.
  std::vector<double> operator()(const pool::Pool& pool, size_t e) const;

 private:
  const pool::FfnSource& source_;
  merge::Options child_merge_;
  ModelConfig config_;     // the checkpoints' MoE's
  Weights<float> shared_;  // its weights, the experts left out
  EngineFactory engine_;
  const TokenizedData& seed_;
  int64_t seq_len_, batch_tokens_;  // seed_losses'
};

}  // namespace upcycle
