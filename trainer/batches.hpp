// Batches of training data: the samples in a seeded order that changes every epoch, packed
// into micro-batches of at most a number of tokens (sequences stay whole, masked from each
// other by the attention, positions restarting), and the next-token targets.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "text/tokenized_data.hpp"
#include "trainer/model.hpp"

namespace upcycle {

struct MicroBatch {
  Batch batch;
  std::vector<int32_t> targets;  // [N] target[t] = labels[t+1] within a sequence; its last is ignored
  int64_t counted = 0;           // targets that count
  std::vector<size_t> samples;   // the data's samples packed, in order
};

// The sequence length a run uses: --seq-len when given (an OptionError above the model's
// context), else the model's max_position_embeddings, at most kDefaultSeqLen.
inline constexpr int64_t kDefaultSeqLen = 2048;
int64_t model_seq_len(std::optional<int64_t> seq_len, const ModelConfig& config);
inline constexpr const char* kSeqLenHelp =
    "longest sample in tokens, longer ones are cut (default: the model's max_position_embeddings, at most 2048)";

// The samples data[indices] packed into one micro-batch, each cut to its first seq_len tokens.
MicroBatch make_micro_batch(const TokenizedData& data, std::span<const size_t> indices, int64_t seq_len);
// How many of the samples data[order[0]], data[order[1]], ... go whole into one micro-batch of
// batch_tokens (each cut to seq_len): at least one when order is not empty.
size_t samples_that_fit(const TokenizedData& data, std::span<const size_t> order, int64_t seq_len,
                        int64_t batch_tokens);

// The samples data[indices] in their order, packed into micro-batches of at most batch_tokens
// (samples_that_fit; each cut to seq_len): visit(mb) for each in turn. Without `indices`, every
// sample in file order. What evaluation and scoring run over.
void for_each_micro_batch(const TokenizedData& data, std::span<const size_t> indices, int64_t seq_len,
                          int64_t batch_tokens, const std::function<void(const MicroBatch&)>& visit);
void for_each_micro_batch(const TokenizedData& data, int64_t seq_len, int64_t batch_tokens,
                          const std::function<void(const MicroBatch&)>& visit);

// Where the sampler stands: the resume state.
struct DataCursor {
  int64_t epoch = 0;  // completed passes over the data
  int64_t index = 0;  // samples of this epoch already taken
  bool operator==(const DataCursor&) const = default;
};

class BatchSampler {
 public:
  // Samples longer than seq_len are cut to their first seq_len tokens. The order of epoch e is a
  // permutation drawn from (seed, e) alone, so any cursor can be resumed without replaying.
  BatchSampler(const TokenizedData& data, int64_t seq_len, int64_t batch_tokens, uint64_t seed);

  // The next samples of the order, as many as fit in batch_tokens (always at least one); moves
  // to the next epoch's order when this one runs out (a batch never straddles two epochs).
  MicroBatch next();

  const DataCursor& cursor() const { return cursor_; }
  void seek(const DataCursor& cursor);

 private:
  void shuffle();
  const TokenizedData& data_;
  int64_t seq_len_, batch_tokens_;
  uint64_t seed_;
  DataCursor cursor_;
  std::vector<size_t> order_;  // this epoch's permutation of the samples
};

}  // namespace upcycle
