// Loss over a data set: the token-weighted mean cross-entropy over the counted (label) tokens,
// the samples taken in file order and packed into micro-batches as in training.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>

#include "text/tokenized_data.hpp"
#include "trainer/engine.hpp"

namespace upcycle {

struct EvalLoss {
  double ce_sum = 0;
  int64_t tokens = 0;  // counted tokens
  int64_t samples = 0;
  double loss() const { return tokens ? ce_sum / double(tokens) : 0.0; }
  double ppl() const { return std::exp(loss()); }
};

// on_batch (may be empty) is told the samples done so far, for progress. Of `parts` processes
// sharing the work, this one (`part`) takes every parts-th micro-batch: their sums add up to the
// whole's.
EvalLoss evaluate_loss(Engine& model, const TokenizedData& data, int64_t seq_len, int64_t batch_tokens,
                       const std::function<void(int64_t done)>& on_batch = {}, int part = 0, int parts = 1);

}  // namespace upcycle
