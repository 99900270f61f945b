#include "trainer/eval_loss.hpp"

#include <numeric>

#include "trainer/batches.hpp"

namespace upcycle {

EvalLoss evaluate_loss(Engine& model, const TokenizedData& data, int64_t seq_len, int64_t batch_tokens,
                       const std::function<void(int64_t)>& on_batch) {
  std::vector<size_t> order(data.samples.size());
  std::iota(order.begin(), order.end(), size_t(0));
  EvalLoss total;
  for (size_t at = 0; at < order.size();) {
    const auto batch = std::span<const size_t>(order).subspan(at, samples_that_fit(data, std::span(order).subspan(at), seq_len, batch_tokens));
    const MicroBatch mb = make_micro_batch(data, batch, seq_len);
    const LossReport r = model.loss(mb.batch, mb.targets);
    total.ce_sum += r.ce_sum;
    total.tokens += r.tokens;
    at += batch.size();
    total.samples = int64_t(at);
    if (on_batch) on_batch(total.samples);
  }
  return total;
}

}  // namespace upcycle
