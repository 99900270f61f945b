#include "trainer/sampling.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

namespace upcycle {

void validate(const SamplingOptions& opts) {
  if (!(opts.temperature >= 0) || std::isinf(opts.temperature))
    throw std::invalid_argument("sampling: temperature must be finite and >= 0, not " +
                                std::to_string(opts.temperature));
  if (!(opts.top_p > 0 && opts.top_p <= 1))
    throw std::invalid_argument("sampling: top_p must be in (0, 1], not " + std::to_string(opts.top_p));
}

int32_t sample_token(std::span<const float> logits, const SamplingOptions& opts, Rng& rng) {
  validate(opts);
  if (logits.empty()) throw std::invalid_argument("sampling: no logits");
  const size_t V = logits.size();
  const auto argmax = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());  // first max
  if (opts.temperature == 0) return argmax;

  // Unnormalised probabilities in double; subtracting the max keeps every exp in (0, 1].
  std::vector<double> p(V);
  for (size_t i = 0; i < V; ++i) p[i] = std::exp((double(logits[i]) - double(logits[argmax])) / opts.temperature);
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  size_t kept = V;  // candidates order[0, kept), of total mass `mass`
  double mass = 0;
  if (opts.top_p == 1) {
    for (double x : p) mass += x;
  } else {
    // The nucleus is usually a small head of the vocabulary: sort a growing prefix only.
    const double target = opts.top_p * std::accumulate(p.begin(), p.end(), 0.0);
    auto more_likely = [&p](int32_t a, int32_t b) {
      return p[size_t(a)] > p[size_t(b)] || (p[size_t(a)] == p[size_t(b)] && a < b);
    };
    kept = 0;
    for (size_t sorted = std::min<size_t>(V, 64);; sorted = std::min(V, 2 * sorted)) {
      std::partial_sort(order.begin() + ptrdiff_t(kept), order.begin() + ptrdiff_t(sorted), order.end(), more_likely);
      for (; kept < sorted && mass < target; ++kept) mass += p[size_t(order[kept])];
      if (mass >= target || sorted == V) break;
    }
  }
  // Walk the candidates in the order `mass` was summed in, so the walk's total is exactly mass;
  // should u round up to it, the last candidate with any probability is the draw.
  const double u = rng.uniform() * mass;
  double acc = 0;
  int32_t chosen = argmax;
  for (size_t j = 0; j < kept; ++j) {
    const int32_t t = order[j];
    if (p[size_t(t)] == 0) continue;
    chosen = t;
    acc += p[size_t(t)];
    if (u < acc) break;
  }
  return chosen;
}

GenerationResult generate(TokenDecoder& decoder, std::span<const int32_t> prompt, int64_t max_new_tokens,
                          std::span<const int32_t> stop_ids, const SamplingOptions& opts,
                          const std::function<void(int32_t)>& on_token) {
  validate(opts);
  if (max_new_tokens < 0) throw std::invalid_argument("generate: max_new_tokens must be >= 0");
  const int64_t needed = int64_t(prompt.size()) + std::max<int64_t>(max_new_tokens - 1, 0);
  if (needed > decoder.capacity() - decoder.length())
    throw std::invalid_argument("generate: " + std::to_string(needed) + " positions needed, " +
                                std::to_string(decoder.capacity() - decoder.length()) + " left in the decoder");
  using Clock = std::chrono::steady_clock;
  GenerationResult result;
  result.prompt_tokens = int64_t(prompt.size());
  const auto start = Clock::now();
  std::vector<float> logits = decoder.append(prompt);
  const auto prefilled = Clock::now();
  result.prefill_seconds = std::chrono::duration<double>(prefilled - start).count();
  Rng rng = Rng::stream(opts.seed, "sampling");
  while (int64_t(result.ids.size()) < max_new_tokens) {
    const int32_t token = sample_token(logits, opts, rng);
    if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
      result.stopped = true;
      break;
    }
    result.ids.push_back(token);
    if (on_token) on_token(token);
    if (int64_t(result.ids.size()) < max_new_tokens) logits = decoder.append({&token, 1});
  }
  result.decode_seconds = std::chrono::duration<double>(Clock::now() - prefilled).count();
  return result;
}

}  // namespace upcycle
