// Pre-tokenized instruction data: JSONL, one object per line with `input_ids` and optional
// `labels` aligned with them (the Hugging Face convention: -100 marks a position that does not
// count, such as a prompt token; the model at position t is trained to predict label t+1).
#pragma once
#include <cstdint>
#include <filesystem>
#include <vector>

namespace upcycle {

inline constexpr int32_t kIgnoreLabel = -100;

struct TokenizedSample {
  std::vector<int32_t> ids;     // [T]
  std::vector<int32_t> labels;  // [T]: ids where the line has no labels
  int64_t line = 0;             // 1-based line of the file, for messages
};

struct TokenizedData {
  std::filesystem::path path;
  std::vector<TokenizedSample> samples;
  int64_t skipped = 0;  // malformed lines passed over with skip_bad
};

// InputError naming the file and line for a malformed line (bad JSON, a missing or empty
// `input_ids`, a non-integer or negative id, `labels` of another length), unless skip_bad, which
// skips and counts it. Blank lines are ignored. An empty file is an error.
TokenizedData read_tokenized_jsonl(const std::filesystem::path& path, bool skip_bad = false);

// InputError naming the sample's line when an id or label is >= vocab.
void check_vocabulary(const TokenizedData& data, int64_t vocab);

}  // namespace upcycle
