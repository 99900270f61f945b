#include "text/tokenized_data.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "core/error.hpp"
#include "core/random.hpp"

namespace upcycle {

TokenizedData split_off(TokenizedData& data, double fraction, uint64_t seed) {
  const size_t n = data.samples.size();
  if (!(fraction > 0 && fraction < 1) || n < 2) throw std::invalid_argument("split_off: 0 < fraction < 1 and 2+ samples");
  const size_t take = std::clamp<size_t>(size_t(std::llround(fraction * double(n))), 1, n - 1);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  Rng rng = Rng::stream(seed, "validation split");
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  std::vector<bool> held(n, false);
  for (size_t i = 0; i < take; ++i) held[order[i]] = true;
  TokenizedData kept{data.path, {}, data.skipped}, out{data.path, {}, 0};
  for (size_t i = 0; i < n; ++i) (held[i] ? out : kept).samples.push_back(std::move(data.samples[i]));
  data = std::move(kept);
  return out;
}

void check_vocabulary(const TokenizedData& data, int64_t vocab) {
  for (const auto& s : data.samples)
    for (size_t i = 0; i < s.ids.size(); ++i)
      require(s.ids[i] < vocab && s.labels[i] < vocab, data.path, "line " + std::to_string(s.line),
              "token " + std::to_string(std::max(s.ids[i], s.labels[i])) + " is outside the model's vocabulary of " +
                  std::to_string(vocab));
}

void fit_context(TokenizedData& data, int64_t context, bool skip_bad) {
  std::erase_if(data.samples, [&](const TokenizedSample& s) {
    if (int64_t(s.ids.size()) <= context) return false;
    require(skip_bad, data.path, "line " + std::to_string(s.line),
            "a sample of " + std::to_string(s.ids.size()) + " tokens is longer than the model's context of " +
                std::to_string(context) + " positions (max_position_embeddings; --skip-bad passes over it)");
    ++data.skipped;
    return true;
  });
}

}  // namespace upcycle
