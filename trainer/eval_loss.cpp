#include "trainer/eval_loss.hpp"

#include "trainer/batches.hpp"

namespace upcycle {

EvalLoss evaluate_loss(Engine& model, const TokenizedData& data, int64_t seq_len, int64_t batch_tokens,
                       const std::function<void(int64_t)>& on_batch, int part, int parts) {
  EvalLoss total;
  int64_t index = 0;
  for_each_micro_batch(data, seq_len, batch_tokens, [&](const MicroBatch& mb) {
    if (index++ % parts != part) return;
    const LossReport r = model.loss(mb.batch, mb.targets);
    total.ce_sum += r.ce_sum;
    total.tokens += r.tokens;
    total.samples += int64_t(mb.samples.size());
    if (on_batch) on_batch(total.samples);
  });
  return total;
}

}  // namespace upcycle
