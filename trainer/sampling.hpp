// Choosing the next token from logits (greedy, temperature, nucleus) and generating text with a
// Decoder.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/random.hpp"
#include "trainer/decoder.hpp"

namespace upcycle {

struct SamplingOptions {
  double temperature = 0;  // 0: greedy (argmax, lowest id on ties); else >= 0
  double top_p = 1;        // nucleus mass, in (0, 1]
  uint64_t seed = 0;       // generate draws from Rng::stream(seed, "sampling")
};

// std::invalid_argument unless temperature >= 0 and 0 < top_p <= 1.
void validate(const SamplingOptions& opts);

// The next token from logits [V]: greedy, or drawn with rng from softmax(logits / temperature)
// restricted to the smallest set of most likely tokens whose mass reaches top_p (the nucleus),
// renormalised. std::invalid_argument for empty logits or invalid options.
int32_t sample_token(std::span<const float> logits, const SamplingOptions& opts, Rng& rng);

struct GenerationResult {
  std::vector<int32_t> ids;  // the new tokens, without the stop token
  bool stopped = false;      // a stop token ended it (not max_new_tokens)
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t prompt_tokens = 0;
};

// Appends the prompt to the decoder, then draws up to max_new_tokens (>= 0), stopping at any of
// stop_ids; on_token (may be empty) sees each new token as it is drawn, for streaming. The same
// options (seed included) give the same tokens. The decoder then holds the prompt and every new
// token but the last one drawn (its logits were never needed), so the caller appends that one
// before continuing. std::invalid_argument, before any work, for invalid options or when the
// decoder lacks room for the prompt and max_new_tokens - 1 more tokens; and from the decoder's
// append (an empty prompt, an id outside the vocabulary).
GenerationResult generate(TokenDecoder& decoder, std::span<const int32_t> prompt, int64_t max_new_tokens,
                          std::span<const int32_t> stop_ids, const SamplingOptions& opts,
                          const std::function<void(int32_t)>& on_token = {});

}  // namespace upcycle
