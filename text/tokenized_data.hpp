// Token ids with labels, the form every kind of instruction data ends in before training or
// evaluation (the Hugging Face convention: -100 marks a position that does not count, such as a
// prompt token; the model at position t is trained to predict label t+1).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace upcycle {

inline constexpr int32_t kIgnoreLabel = -100;

struct TokenizedSample {
  std::vector<int32_t> ids;     // [T]
  std::vector<int32_t> labels;  // [T]
  std::string task;             // the record's `task`, when it has one
  int64_t line = 0;             // 1-based line of the file, for messages
};

struct TokenizedData {
  std::filesystem::path path;
  std::vector<TokenizedSample> samples;
  int64_t skipped = 0;  // malformed lines passed over with skip_bad
};

// Moves a seeded random `fraction` of the samples (at least one, and never all) out of `data`
// into the returned set, both keeping file order; std::invalid_argument unless 0 < fraction < 1
// and data has at least two samples.
TokenizedData split_off(TokenizedData& data, double fraction, uint64_t seed);

// InputError naming the sample's line when an id or label is >= vocab.
void check_vocabulary(const TokenizedData& data, int64_t vocab);

// Samples longer than the model's context (max_position_embeddings): an InputError naming the
// file and line, or with skip_bad dropped and counted in data.skipped.
void fit_context(TokenizedData& data, int64_t context, bool skip_bad);

}  // namespace upcycle
