// Incremental decoding: attention_cached against attention_forward and a plain double
// computation; the Decoder's logits, appended in pieces, against Model::forward over the whole
// sequence; sampling's distributions against the softmax; generate against greedy decoding
// with Model::forward.
#include <doctest/doctest.h>

#include <algorithm>
#include <span>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "tests/common/fixtures.hpp"
#include "tests/trainer/gradcheck.hpp"
#include "trainer/decoder.hpp"
#include "trainer/ops/attention_cached.hpp"
#include "trainer/sampling.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

// ---- attention_cached

// Queries at positions p0 .. p0+n-1 against cache rows 0 .. p0+n-1, softmax over the visible
// keys written out in full.
Vec naive_cached(const Vec& q, const Vec& k, const Vec& v, int64_t p0, const ops::AttentionShape& s) {
  const int64_t n = s.tokens, nH = s.heads, nKV = s.kv_heads, D = s.head_dim;
  Vec out(size_t(n * nH * D), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < nH; ++h) {
      const int64_t p = p0 + i, g = h / (nH / nKV);
      Vec score(size_t(p + 1), -std::numeric_limits<double>::infinity());
      for (int64_t j = 0; j <= p; ++j) {
        if (s.window && p - j >= s.window) continue;
        score[j] = 0;
        for (int64_t d = 0; d < D; ++d) score[j] += q[(i * nH + h) * D + d] * k[(j * nKV + g) * D + d];
        score[j] /= std::sqrt(double(D));
      }
      const double m = *std::max_element(score.begin(), score.end());
      double z = 0;
      for (double x : score) z += std::exp(x - m);
      for (int64_t j = 0; j <= p; ++j)
        for (int64_t d = 0; d < D; ++d)
          out[(i * nH + h) * D + d] += std::exp(score[j] - m) / z * v[(j * nKV + g) * D + d];
    }
  return out;
}

ops::AttentionShape cached_shape(int64_t n, int64_t heads, int64_t kv_heads, int64_t window) {
  return {.tokens = n, .heads = heads, .kv_heads = kv_heads, .head_dim = 6, .window = window};
}

// Every query of one sequence at once (p0 = 0) gives attention_forward's output.
void check_against_attention_forward(int64_t heads, int64_t kv_heads, int64_t window) {
  const int64_t N = 13;
  const ops::AttentionShape shape = cached_shape(N, heads, kv_heads, window);
  const Vec q = random_vec(size_t(N * heads * 6), 1, 2.0), k = random_vec(size_t(N * kv_heads * 6), 2, 2.0),
            v = random_vec(size_t(N * kv_heads * 6), 3);
  const std::vector<int32_t> cu = {0, int32_t(N)};
  Vec expected(q.size()), lse(size_t(heads * N)), out(q.size());
  ops::attention_forward(expected.data(), lse.data(), q.data(), k.data(), v.data(), cu.data(), 1, shape);
  ops::attention_cached(out.data(), q.data(), k.data(), v.data(), 0, shape);
  CHECK(relative_error(out, expected) < 1e-13);
  const auto qf = as<float>(q), kf = as<float>(k), vf = as<float>(v);
  std::vector<float> out_f(q.size());
  ops::attention_cached(out_f.data(), qf.data(), kf.data(), vf.data(), 0, shape);
  CHECK(relative_error(widen(out_f), expected) < 1e-5);
}

// n queries after p0 cached positions; the cache has rows to spare, NaN, which must not be read.
void check_against_naive(int64_t p0, int64_t n, int64_t heads, int64_t kv_heads, int64_t window) {
  const int64_t rows = p0 + n, spare = 5, kv = kv_heads * 6;
  const ops::AttentionShape shape = cached_shape(n, heads, kv_heads, window);
  const Vec q = random_vec(size_t(n * heads * 6), 4, 2.0), k = random_vec(size_t(rows * kv), 5, 2.0),
            v = random_vec(size_t(rows * kv), 6);
  Vec k_cache = k, v_cache = v;
  k_cache.resize(size_t((rows + spare) * kv), std::numeric_limits<double>::quiet_NaN());
  v_cache.resize(k_cache.size(), std::numeric_limits<double>::quiet_NaN());
  Vec out(q.size());
  ops::attention_cached(out.data(), q.data(), k_cache.data(), v_cache.data(), p0, shape);
  CHECK(relative_error(out, naive_cached(q, k, v, p0, shape)) < 1e-13);
}

// ---- Decoder

int64_t vocab(const Model& m) { return m.config().vocab_size; }

std::vector<int32_t> random_ids(size_t n, uint64_t seed, int64_t V) {
  Rng rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = int32_t(rng.below(uint64_t(V)));
  return ids;
}

// Row `row` of logits [N, V].
Vec row_of(std::span<const float> logits, int64_t row, int64_t V) {
  return Vec(logits.begin() + row * V, logits.begin() + (row + 1) * V);
}

// Appending ids in pieces of the given sizes returns, after each piece, Model::forward's row of
// the piece's last token.
void check_pieces(const Model& model, const std::vector<int32_t>& ids, const std::vector<size_t>& pieces) {
  const int64_t V = vocab(model);
  const auto full = model.forward(pack({ids}));
  Decoder decoder(model, int64_t(ids.size()));  // exactly full at the end
  size_t at = 0;
  for (size_t piece : pieces) {
    const std::vector<float> logits = decoder.append(std::span(ids).subspan(at, piece));
    at += piece;
    CAPTURE(at);
    CHECK(decoder.length() == int64_t(at));
    CHECK(relative_error(widen(logits), row_of(full, int64_t(at) - 1, V)) <= 1e-4);
  }
  REQUIRE(at == ids.size());
}

void check_decoder(const Checkpoint& ckpt) {
  const Model model(ckpt);
  const std::vector<int32_t> ids = random_ids(12, 21, vocab(model));
  check_pieces(model, ids, {5, 1, 1, 1, 1, 1, 1, 1});
  check_pieces(model, ids, {3, 4, 5});
  check_pieces(model, ids, {12});
}

ModelConfig mistral_window3() {
  auto j = tiny_config("mistral").to_json();
  j["sliding_window"] = 3;
  return ModelConfig::from_json(j, "<mistral>");
}

// ---- sampling

// Frequencies of n draws of sample_token over logits.
Vec frequencies(const std::vector<float>& logits, const SamplingOptions& opts, int n) {
  Rng rng = Rng::stream(opts.seed, "test");
  Vec f(logits.size(), 0.0);
  for (int i = 0; i < n; ++i) f[size_t(sample_token(logits, opts, rng))] += 1.0 / n;
  return f;
}

double max_abs_diff(const Vec& a, const Vec& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

// Greedy continuation by full forwards: the argmax of the last row, max_new times.
std::vector<int32_t> greedy_by_forward(const Model& model, std::vector<int32_t> ids, int64_t max_new) {
  const int64_t V = vocab(model);
  std::vector<int32_t> out;
  for (int64_t t = 0; t < max_new; ++t) {
    const auto logits = model.forward(pack({ids}));
    const auto last = logits.end() - V;
    out.push_back(int32_t(std::max_element(last, logits.end()) - last));
    ids.push_back(out.back());
  }
  return out;
}

const std::vector<int32_t> kPrompt = {1, 7, 39, 3};

}  // namespace

TEST_CASE("attention_cached: all queries from position 0 equal attention_forward") {
  check_against_attention_forward(4, 2, 0);
  check_against_attention_forward(4, 2, 3);
  check_against_attention_forward(3, 1, 0);
  check_against_attention_forward(2, 2, 5);
}

TEST_CASE("attention_cached: queries after cached positions equal the plain computation") {
  check_against_naive(7, 1, 6, 2, 0);  // decode
  check_against_naive(7, 1, 6, 2, 3);
  check_against_naive(9, 4, 4, 2, 0);  // a chunk
  check_against_naive(9, 4, 4, 2, 3);
  check_against_naive(3, 5, 4, 1, 20);  // a window wider than the sequence
  check_against_naive(6, 2, 2, 2, 1);   // a window of one: each query sees itself only
}

TEST_CASE("attention_cached: bad shapes are refused") {
  std::vector<double> x(100);
  CHECK_THROWS_AS(ops::attention_cached(x.data(), x.data(), x.data(), x.data(), 0, cached_shape(1, 3, 2, 0)),
                  std::invalid_argument);
  CHECK_THROWS_AS(ops::attention_cached(x.data(), x.data(), x.data(), x.data(), -1, cached_shape(1, 2, 2, 0)),
                  std::invalid_argument);
}

TEST_CASE("decoder: llama logits appended in pieces equal Model::forward") {
  check_decoder(*random_checkpoint(tiny_config("llama"), 1));
}

TEST_CASE("decoder: qwen3's per-head q/k norms equal Model::forward") {
  auto j = tiny_config("qwen3").to_json();
  j["head_dim"] = 6;
  check_decoder(*random_checkpoint(ModelConfig::from_json(j, "<qwen3>"), 3));
}

TEST_CASE("decoder: qwen2 with biases and tied embeddings equals Model::forward") {
  const ModelConfig config = tiny_config("qwen2", true);
  REQUIRE(config.attention_bias);
  REQUIRE(config.tie_word_embeddings);
  check_decoder(*random_checkpoint(config, 2));
}

TEST_CASE("decoder: mistral with a sliding window of 3 equals Model::forward") {
  check_decoder(*random_checkpoint(mistral_window3(), 10));
}

TEST_CASE("decoder: mixtral with 4 experts top-2 equals Model::forward") {
  check_decoder(*random_checkpoint(tiny_config("mixtral"), 3));
}

TEST_CASE("decoder: qwen2_moe's shared expert and unnormalised top-k equal Model::forward") {
  check_decoder(*random_checkpoint(tiny_config("qwen2_moe", true), 4));
}

TEST_CASE("decoder: truncate forgets positions and a continuation is recomputed the same") {
  const Model model(*random_checkpoint(tiny_config("llama"), 4));
  const std::vector<int32_t> prompt = {1, 7, 39, 3, 3}, a = {12, 0, 25}, b = {18, 2, 9};
  Decoder decoder(model, 16);
  decoder.append(prompt);
  const std::vector<float> after_a = decoder.append(a);
  decoder.truncate(5);
  CHECK(decoder.length() == 5);
  const std::vector<float> after_b = decoder.append(b);  // overwrites a's cache rows
  CHECK(after_b != after_a);
  decoder.truncate(5);
  CHECK(decoder.append(a) == after_a);  // the same computation on the same cache: bitwise
  CHECK(decoder.length() == 8);
  decoder.truncate(0);
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), a.begin(), a.end());
  CHECK(relative_error(widen(decoder.append(all)), widen(after_a)) <= 1e-5);
  CHECK_THROWS_AS(decoder.truncate(9), std::invalid_argument);
  CHECK_THROWS_AS(decoder.truncate(-1), std::invalid_argument);
}

TEST_CASE("decoder: capacity, empty appends and ids outside the vocabulary are refused") {
  const Model model(*random_checkpoint(tiny_config("llama"), 5));
  CHECK_THROWS_AS(Decoder(model, 0), std::invalid_argument);
  CHECK_THROWS_AS(Decoder(model, 65), std::invalid_argument);  // max_position_embeddings is 64
  CHECK(Decoder(model, 64).capacity() == 64);

  Decoder decoder(model, 4);
  decoder.append(std::vector<int32_t>{1, 7, 39});
  CHECK_THROWS_AS(decoder.append(std::vector<int32_t>{3, 3}), std::invalid_argument);
  CHECK_THROWS_AS(decoder.append(std::vector<int32_t>{}), std::invalid_argument);
  CHECK_THROWS_AS(decoder.append(std::vector<int32_t>{40}), std::invalid_argument);
  CHECK_THROWS_AS(decoder.append(std::vector<int32_t>{-1}), std::invalid_argument);
  CHECK(decoder.length() == 3);
  // The refused appends left nothing behind: the fourth token still gets forward's logits.
  const std::vector<float> logits = decoder.append(std::vector<int32_t>{3});
  const auto full = model.forward(pack({{1, 7, 39, 3}}));
  CHECK(relative_error(widen(logits), row_of(full, 3, vocab(model))) <= 1e-4);
  CHECK_THROWS_AS(decoder.append(std::vector<int32_t>{3}), std::invalid_argument);
}

TEST_CASE("sampling: greedy takes the argmax, the lowest id on ties") {
  Rng rng(1);
  CHECK(sample_token(std::vector<float>{3, 1, 7, 2}, {}, rng) == 2);
  CHECK(sample_token(std::vector<float>{0.1f, 2.5f, -1, 2.5f, 0.3f}, {}, rng) == 1);
}

TEST_CASE("sampling: a tiny top_p keeps only the most likely token, whatever the temperature") {
  const std::vector<float> logits = {0.5f, 1.0f, 0.2f, 1.1f, 0.9f};
  Rng rng(2);
  for (int i = 0; i < 200; ++i) REQUIRE(sample_token(logits, {.temperature = 5, .top_p = 1e-6}, rng) == 3);
}

TEST_CASE("sampling: frequencies follow softmax(logits / temperature) within the nucleus") {
  // probabilities 0.1, 0.2, 0.3, 0.4 (plus a constant shift, which the softmax ignores)
  const std::vector<float> logits = {std::log(0.1f) + 3, std::log(0.2f) + 3, std::log(0.3f) + 3, std::log(0.4f) + 3};
  const int n = 20000;
  CHECK(max_abs_diff(frequencies(logits, {.temperature = 1, .top_p = 1, .seed = 1}, n), {0.1, 0.2, 0.3, 0.4}) < 0.02);
  // temperature 2: p ∝ sqrt(p)
  const double z = std::sqrt(0.1) + std::sqrt(0.2) + std::sqrt(0.3) + std::sqrt(0.4);
  const Vec hot = {std::sqrt(0.1) / z, std::sqrt(0.2) / z, std::sqrt(0.3) / z, std::sqrt(0.4) / z};
  CHECK(max_abs_diff(frequencies(logits, {.temperature = 2, .top_p = 1, .seed = 2}, n), hot) < 0.02);
  // top_p 0.5: 0.4 + 0.3 reaches it; 0.75: 0.4 + 0.3 does not, 0.2 joins.
  CHECK(max_abs_diff(frequencies(logits, {.temperature = 1, .top_p = 0.5, .seed = 3}, n), {0, 0, 3. / 7, 4. / 7}) <
        0.02);
  const Vec nucleus = frequencies(logits, {.temperature = 1, .top_p = 0.75, .seed = 4}, n);
  CHECK(nucleus[0] == 0);
  CHECK(max_abs_diff(nucleus, {0, 2. / 9, 3. / 9, 4. / 9}) < 0.02);
}

TEST_CASE("sampling: a nucleus of most of a flat vocabulary keeps the lowest ids") {
  // 200 equal logits, top_p 0.9: the first 180 ids (ties go to the lower id), past the first
  // partial sort's 64 and 128.
  const Vec f = frequencies(std::vector<float>(200, 0.5f), {.temperature = 1, .top_p = 0.9, .seed = 5}, 20000);
  CHECK(std::count_if(f.begin(), f.begin() + 180, [](double x) { return x > 0; }) == 180);
  CHECK(std::all_of(f.begin() + 180, f.end(), [](double x) { return x == 0; }));
}

TEST_CASE("sampling: a seed repeats its draws and another seed differs") {
  const std::vector<float> logits(10, 0.0f);
  auto draws = [&](uint64_t seed) {
    Rng rng = Rng::stream(seed, "test");
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(sample_token(logits, {.temperature = 1}, rng));
    return out;
  };
  CHECK(draws(7) == draws(7));
  CHECK(draws(7) != draws(8));
}

TEST_CASE("sampling: invalid options and empty logits are refused") {
  const std::vector<float> logits = {1, 2};
  Rng rng(3);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const SamplingOptions& bad : {SamplingOptions{.temperature = -1}, SamplingOptions{.temperature = nan},
                                     SamplingOptions{.top_p = 0}, SamplingOptions{.top_p = 1.5},
                                     SamplingOptions{.top_p = nan}})
    CHECK_THROWS_AS(sample_token(logits, bad, rng), std::invalid_argument);
  CHECK_THROWS_AS(sample_token(std::vector<float>{}, {}, rng), std::invalid_argument);
}

TEST_CASE("sampling: generate greedily continues as repeated Model::forward does") {
  const Model model(*random_checkpoint(tiny_config("llama"), 6));
  const std::vector<int32_t> expected = greedy_by_forward(model, kPrompt, 6);
  Decoder decoder(model, 32);
  std::vector<int32_t> streamed;
  const GenerationResult r = generate(decoder, kPrompt, 6, {}, {}, [&](int32_t t) { streamed.push_back(t); });
  CHECK(r.ids == expected);
  CHECK(streamed == expected);
  CHECK_FALSE(r.stopped);
  CHECK(r.prompt_tokens == 4);
  CHECK(decoder.length() == 4 + 5);  // the last drawn token was never run
  CHECK(r.prefill_seconds > 0);
  CHECK(r.decode_seconds > 0);
}

TEST_CASE("sampling: generate stops at a stop token and respects max_new_tokens") {
  const Model model(*random_checkpoint(tiny_config("llama"), 6));
  const std::vector<int32_t> expected = greedy_by_forward(model, kPrompt, 6);
  const std::vector<int32_t> first = {expected[0]};
  {
    Decoder decoder(model, 32);
    const GenerationResult r = generate(decoder, kPrompt, 6, first, {});
    CHECK(r.ids.empty());
    CHECK(r.stopped);
    CHECK(decoder.length() == 4);
  }
  {  // stopping at the third token: the ids before its first occurrence
    Decoder decoder(model, 32);
    const std::vector<int32_t> stop = {expected[2], 39};
    const size_t at = size_t(std::find_first_of(expected.begin(), expected.end(), stop.begin(), stop.end()) -
                             expected.begin());
    const GenerationResult r = generate(decoder, kPrompt, 6, stop, {});
    CHECK(r.ids == std::vector<int32_t>(expected.begin(), expected.begin() + ptrdiff_t(at)));
    CHECK(r.stopped);
  }
  for (int64_t max_new : {0, 1, 3}) {
    Decoder decoder(model, 32);
    const GenerationResult r = generate(decoder, kPrompt, max_new, {}, {});
    CHECK(r.ids == std::vector<int32_t>(expected.begin(), expected.begin() + max_new));
    CHECK_FALSE(r.stopped);
  }
  Decoder small(model, 8);
  CHECK_THROWS_AS(generate(small, kPrompt, 6, {}, {}), std::invalid_argument);  // 4 + 5 > 8
  CHECK(small.length() == 0);
  CHECK(generate(small, kPrompt, 5, {}, {}).ids.size() == 5);  // 4 + 4 fits
  Decoder other(model, 32);
  CHECK_THROWS_AS(generate(other, kPrompt, -1, {}, {}), std::invalid_argument);
  CHECK_THROWS_AS(generate(other, kPrompt, 3, {}, {.top_p = 0}), std::invalid_argument);
}

TEST_CASE("sampling: generate with a temperature is repeatable by seed") {
  const Model model(*random_checkpoint(tiny_config("mixtral"), 7));
  auto run = [&](uint64_t seed) {
    Decoder decoder(model, 32);
    return generate(decoder, kPrompt, 12, {}, {.temperature = 1, .seed = seed}).ids;
  };
  CHECK(run(3) == run(3));
  CHECK(run(3) != run(4));
}
