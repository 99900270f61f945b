#include "trainer/batches.hpp"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "core/option_table.hpp"
#include "core/random.hpp"
#include "trainer/ops/cross_entropy.hpp"

namespace upcycle {

static_assert(kIgnoreLabel == ops::kIgnoreIndex);

int64_t model_seq_len(std::optional<int64_t> seq_len, const ModelConfig& config) {
  const int64_t context = config.max_position_embeddings;
  if (!seq_len) return std::min(context, kDefaultSeqLen);
  if (*seq_len > context)
    throw OptionError("seq_len", option_name("seq_len") + " " + std::to_string(*seq_len) +
                                     " is longer than the model's context of " + std::to_string(context) +
                                     " positions (max_position_embeddings)");
  return *seq_len;
}

BatchSampler::BatchSampler(const TokenizedData& data, int64_t seq_len, int64_t batch_tokens, uint64_t seed)
    : data_(data), seq_len_(seq_len), batch_tokens_(batch_tokens), seed_(seed) {
  if (seq_len < 2 || batch_tokens < 1) throw std::invalid_argument("BatchSampler: seq_len >= 2 and batch_tokens >= 1");
  if (data.samples.empty()) throw std::invalid_argument("BatchSampler: no samples");
  shuffle();
}

// Fisher-Yates with the epoch's own stream.
void BatchSampler::shuffle() {
  order_.resize(data_.samples.size());
  std::iota(order_.begin(), order_.end(), size_t(0));
  Rng rng = Rng::stream(seed_, "data order, epoch " + std::to_string(cursor_.epoch));
  for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng.below(i)]);
}

void BatchSampler::seek(const DataCursor& cursor) {
  if (cursor.index < 0 || size_t(cursor.index) > data_.samples.size() || cursor.epoch < 0)
    throw std::invalid_argument("BatchSampler: cursor outside the data");
  cursor_ = cursor;
  shuffle();
}

MicroBatch make_micro_batch(const TokenizedData& data, std::span<const size_t> indices, int64_t seq_len) {
  MicroBatch mb;
  std::vector<std::vector<int32_t>> seqs;
  for (size_t i : indices) {
    const TokenizedSample& s = data.samples[i];
    const int64_t len = std::min<int64_t>(int64_t(s.ids.size()), seq_len);
    seqs.emplace_back(s.ids.begin(), s.ids.begin() + len);
    for (int64_t t = 0; t < len; ++t) mb.targets.push_back(t + 1 < len ? s.labels[size_t(t + 1)] : kIgnoreLabel);
  }
  mb.batch = pack(seqs);
  mb.samples.assign(indices.begin(), indices.end());
  mb.counted = std::count_if(mb.targets.begin(), mb.targets.end(), [](int32_t t) { return t != kIgnoreLabel; });
  return mb;
}

size_t samples_that_fit(const TokenizedData& data, std::span<const size_t> order, int64_t seq_len,
                        int64_t batch_tokens) {
  size_t n = 0;
  for (int64_t tokens = 0; n < order.size(); ++n) {
    tokens += std::min<int64_t>(int64_t(data.samples[order[n]].ids.size()), seq_len);
    if (n > 0 && tokens > batch_tokens) break;
  }
  return n;
}

void for_each_micro_batch(const TokenizedData& data, std::span<const size_t> indices, int64_t seq_len,
                          int64_t batch_tokens, const std::function<void(const MicroBatch&)>& visit) {
  for (size_t at = 0; at < indices.size();) {
    const auto rest = indices.subspan(at);
    const size_t n = samples_that_fit(data, rest, seq_len, batch_tokens);
    visit(make_micro_batch(data, rest.first(n), seq_len));
    at += n;
  }
}

void for_each_micro_batch(const TokenizedData& data, int64_t seq_len, int64_t batch_tokens,
                          const std::function<void(const MicroBatch&)>& visit) {
  std::vector<size_t> all(data.samples.size());
  std::iota(all.begin(), all.end(), size_t(0));
  for_each_micro_batch(data, all, seq_len, batch_tokens, visit);
}

MicroBatch BatchSampler::next() {
  if (size_t(cursor_.index) == order_.size()) seek({cursor_.epoch + 1, 0});
  const auto rest = std::span<const size_t>(order_).subspan(size_t(cursor_.index));
  const size_t n = samples_that_fit(data_, rest, seq_len_, batch_tokens_);
  cursor_.index += int64_t(n);
  return make_micro_batch(data_, rest.first(n), seq_len_);
}

}  // namespace upcycle
