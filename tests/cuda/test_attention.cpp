// Attention on the GPU against the CPU reference in double on the same inputs: packed sequences of
// uneven lengths (one of a single token), grouped and plain heads, with and without a sliding
// window, every supported head dim; the backward adds into gradients that start random, and is
// bit-for-bit repeatable; decoding against a cache matches both ops::attention_cached and the
// last rows of the forward.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "cuda/ops/attention.hpp"
#include "cuda_check.hpp"
#include "trainer/ops/attention.hpp"
#include "trainer/ops/attention_cached.hpp"

namespace upcycle::test {

namespace {

struct Case {
  std::vector<int32_t> cu_seqlens;
  int64_t heads, kv_heads, head_dim, window;
};

ops::AttentionShape shape_of(const Case& c, int64_t tokens) {
  return {.tokens = tokens, .heads = c.heads, .kv_heads = c.kv_heads, .head_dim = c.head_dim, .window = c.window};
}

int64_t longest(const std::vector<int32_t>& cu) {
  int64_t m = 0;
  for (size_t s = 0; s + 1 < cu.size(); ++s) m = std::max<int64_t>(m, cu[s + 1] - cu[s]);
  return m;
}

double rms(const std::vector<double>& x) {
  double sq = 0;
  for (double v : x) sq += v * v;
  return std::sqrt(sq / double(x.size()));
}

std::vector<float> plus(const std::vector<float>& a, const std::vector<double>& b) {
  std::vector<float> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = float(double(a[i]) + b[i]);
  return out;
}

template <class T>
void check_case(const Case& c, uint64_t seed) {
  const int64_t N = c.cu_seqlens.back(), S = int64_t(c.cu_seqlens.size()) - 1, D = c.head_dim;
  const ops::AttentionShape shape = shape_of(c, N);
  const size_t nq = size_t(N * c.heads * D), nkv = size_t(N * c.kv_heads * D), nlse = size_t(N * c.heads);
  INFO("tokens " << N << ", heads " << c.heads << "/" << c.kv_heads << ", D " << D << ", window " << c.window);
  // Scores of a few units, so that the softmax is neither flat nor one-hot.
  const auto q = stored<T>(uniform(nq, seed, -2, 2)), k = stored<T>(uniform(nkv, seed + 1, -2, 2)),
             v = stored<T>(uniform(nkv, seed + 2)), d_out = stored<T>(uniform(nq, seed + 3));
  const auto q_w = widen(q), k_w = widen(k), v_w = widen(v), d_out_w = widen(d_out);
  const auto cu = to_device_ints(c.cu_seqlens);
  const auto dq_in = to_device<T>(q), dk_in = to_device<T>(k), dv_in = to_device<T>(v);

  // Forward.
  std::vector<double> out_ref(nq), lse_ref(nlse);
  ops::attention_forward(out_ref.data(), lse_ref.data(), q_w.data(), k_w.data(), v_w.data(), c.cu_seqlens.data(), S,
                         shape);
  auto out = poisoned<T>(nq);
  auto lse = poisoned<float>(nlse);
  cuda::attention_forward(out.data(), lse.data(), dq_in.data(), dk_in.data(), dv_in.data(), cu.data(), S,
                          longest(c.cu_seqlens), shape);
  check_close(to_host(out), narrow(out_ref), tolerance<T>(), "out");
  // lse is fp32 whatever T, computed from the same (rounded) inputs: float's bound holds.
  check_close(to_host(lse), narrow(lse_ref), tolerance<float>(), "lse");

  // Backward, from the reference's out and lse as T and fp32 hold them, so both sides see the
  // same inputs. The gradients start random at the scale of what backward adds, so that the check
  // sees the contribution as well as a dropped start; at least 0.1 (the inputs are O(1)), since
  // d_q and d_k cancel to 0 under a one-token window, where fp32 leaves residues of about 1e-7.
  const auto out_in = stored<T>(narrow(out_ref)), lse_in = narrow(lse_ref);
  const auto out_in_w = widen(out_in), lse_in_w = widen(lse_in);
  std::vector<double> dq_ref(nq, 0.0), dk_ref(nkv, 0.0), dv_ref(nkv, 0.0);
  ops::attention_backward(dq_ref.data(), dk_ref.data(), dv_ref.data(), d_out_w.data(), q_w.data(), k_w.data(),
                          v_w.data(), out_in_w.data(), lse_in_w.data(), c.cu_seqlens.data(), S, shape);
  auto start = [](size_t n, uint64_t s, double scale) {
    std::vector<float> x = uniform(n, s);
    for (float& e : x) e = float(e * std::max(scale, 0.1));
    return stored<T>(x);
  };
  const auto sq = start(nq, seed + 4, rms(dq_ref)), sk = start(nkv, seed + 5, rms(dk_ref)),
             sv = start(nkv, seed + 6, rms(dv_ref));

  const auto d_out_d = to_device<T>(d_out), out_d = to_device<T>(out_in);
  const auto lse_d = to_device<float>(lse_in);
  auto run_backward = [&] {
    auto d_q = to_device<T>(sq), d_k = to_device<T>(sk), d_v = to_device<T>(sv);
    cuda::attention_backward(d_q.data(), d_k.data(), d_v.data(), d_out_d.data(), dq_in.data(), dk_in.data(),
                             dv_in.data(), out_d.data(), lse_d.data(), cu.data(), S, longest(c.cu_seqlens), shape);
    return std::vector{d_q.download(), d_k.download(), d_v.download()};
  };
  const auto first = run_backward();
  auto as_float = [](const std::vector<T>& x) { return std::vector<float>(x.begin(), x.end()); };
  check_close(as_float(first[0]), plus(sq, dq_ref), tolerance<T>(), "d_q");
  check_close(as_float(first[1]), plus(sk, dk_ref), tolerance<T>(), "d_k");
  check_close(as_float(first[2]), plus(sv, dv_ref), tolerance<T>(), "d_v");
  const auto second = run_backward();
  for (int i = 0; i < 3; ++i) CHECK_MESSAGE(same_bits(first[i], second[i]), "gradient " << i << " differs between runs");
}

// Sequences of 1, 37, 130 and 64 tokens: tiles of 32 and 64 rows start and end inside them.
const std::vector<int32_t> kUneven = {0, 1, 38, 168, 232};

}  // namespace

TEST_CASE_TEMPLATE("attention: forward and backward match the CPU, causal, grouped and plain heads", T, float,
                   cuda::bf16) {
  check_case<T>({.cu_seqlens = kUneven, .heads = 4, .kv_heads = 2, .head_dim = 64, .window = 0}, 10);
  check_case<T>({.cu_seqlens = kUneven, .heads = 2, .kv_heads = 2, .head_dim = 80, .window = 0}, 20);
  check_case<T>({.cu_seqlens = kUneven, .heads = 4, .kv_heads = 1, .head_dim = 128, .window = 0}, 30);
}

TEST_CASE_TEMPLATE("attention: forward and backward match the CPU with a sliding window", T, float, cuda::bf16) {
  // Windows narrower than a tile, wider than one, of one token (each query sees only itself),
  // and wider than any sequence (plain causal).
  check_case<T>({.cu_seqlens = kUneven, .heads = 4, .kv_heads = 2, .head_dim = 96, .window = 45}, 40);
  check_case<T>({.cu_seqlens = kUneven, .heads = 4, .kv_heads = 2, .head_dim = 64, .window = 100}, 50);
  check_case<T>({.cu_seqlens = kUneven, .heads = 2, .kv_heads = 1, .head_dim = 32, .window = 1}, 60);
  check_case<T>({.cu_seqlens = kUneven, .heads = 2, .kv_heads = 2, .head_dim = 256, .window = 20}, 70);
  check_case<T>({.cu_seqlens = {0, 70, 75}, .heads = 2, .kv_heads = 1, .head_dim = 256, .window = 500}, 80);
}

namespace {

template <class T>
void check_cached(int64_t p0, int64_t n, int64_t heads, int64_t kv_heads, int64_t D, int64_t window, uint64_t seed) {
  const int64_t L = p0 + n;
  INFO("p0 " << p0 << ", n " << n << ", heads " << heads << "/" << kv_heads << ", D " << D << ", window " << window);
  // The whole sequence's queries; the n new ones are its last rows.
  const auto q = stored<T>(uniform(size_t(L * heads * D), seed, -2, 2));
  const auto k = stored<T>(uniform(size_t(L * kv_heads * D), seed + 1, -2, 2));
  const auto v = stored<T>(uniform(size_t(L * kv_heads * D), seed + 2));
  const auto q_w = widen(q), k_w = widen(k), v_w = widen(v);
  const ops::AttentionShape cached{.tokens = n, .heads = heads, .kv_heads = kv_heads, .head_dim = D, .window = window};
  const int64_t new_offset = p0 * heads * D;

  std::vector<double> ref(size_t(n * heads * D));
  ops::attention_cached(ref.data(), q_w.data() + new_offset, k_w.data(), v_w.data(), p0, cached);
  const auto q_d = to_device<T>(q), k_d = to_device<T>(k), v_d = to_device<T>(v);
  auto out = poisoned<T>(ref.size());
  cuda::attention_cached(out.data(), q_d.data() + new_offset, k_d.data(), v_d.data(), p0, cached);
  const auto got = to_host(out);
  check_close(got, narrow(ref), tolerance<T>(), "cached out");

  // The forward over the whole sequence gives the same last rows.
  ops::AttentionShape full = cached;
  full.tokens = L;
  const auto cu = to_device_ints({0, int32_t(L)});
  auto full_out = poisoned<T>(q.size());
  auto lse = poisoned<float>(size_t(L * heads));
  cuda::attention_forward(full_out.data(), lse.data(), q_d.data(), k_d.data(), v_d.data(), cu.data(), 1, L, full);
  const auto full_host = to_host(full_out);
  check_close(got, std::vector<float>(full_host.begin() + new_offset, full_host.end()), tolerance<T>(),
              "cached against forward");
}

}  // namespace

TEST_CASE_TEMPLATE("attention: decoding against a cache matches the CPU and the forward's last rows", T, float,
                   cuda::bf16) {
  check_cached<T>(0, 37, 4, 2, 64, 0, 100);   // prefill
  check_cached<T>(150, 1, 4, 2, 64, 0, 110);  // one new token after a long cache
  check_cached<T>(70, 5, 4, 1, 96, 16, 120);  // a window, all heads on one kv head
  check_cached<T>(9, 3, 2, 2, 80, 0, 130);    // fewer keys than warps
}

TEST_CASE("attention: an unsupported head dim is refused before any launch") {
  const auto cu = to_device_ints({0, 4});
  auto x = to_device<float>(uniform(4 * 2 * 48, 1));
  auto lse = poisoned<float>(8);
  const ops::AttentionShape shape{.tokens = 4, .heads = 2, .kv_heads = 1, .head_dim = 48};
  float* p = x.data();
  CHECK_THROWS_AS(cuda::attention_forward(p, lse.data(), p, p, p, cu.data(), 1, 4, shape), std::invalid_argument);
  CHECK_THROWS_AS(cuda::attention_backward(p, p, p, p, p, p, p, p, lse.data(), cu.data(), 1, 4, shape),
                  std::invalid_argument);
  CHECK_THROWS_AS(cuda::attention_cached(p, p, p, p, 0, shape), std::invalid_argument);
}

TEST_CASE("attention: bad shapes are refused and an empty batch launches nothing") {
  const auto cu = to_device_ints({0, 4});
  auto x = to_device<float>(uniform(4 * 3 * 64, 1));
  auto lse = poisoned<float>(12);
  float* p = x.data();
  const ops::AttentionShape three_over_two{.tokens = 4, .heads = 3, .kv_heads = 2, .head_dim = 64};
  CHECK_THROWS_AS(cuda::attention_forward(p, lse.data(), p, p, p, cu.data(), 1, 4, three_over_two),
                  std::invalid_argument);
  const ops::AttentionShape ok{.tokens = 4, .heads = 3, .kv_heads = 1, .head_dim = 64};
  CHECK_THROWS_AS(cuda::attention_forward(p, lse.data(), p, p, p, cu.data(), 1, 5, ok), std::invalid_argument);
  CHECK_THROWS_AS(cuda::attention_forward(p, lse.data(), p, p, p, cu.data(), 1, 0, ok), std::invalid_argument);

  const ops::AttentionShape empty{.tokens = 0, .heads = 3, .kv_heads = 1, .head_dim = 64};
  cuda::attention_forward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 0, empty);
  cuda::attention_backward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                  nullptr, 0, 0, empty);
  cuda::attention_cached<float>(nullptr, nullptr, nullptr, nullptr, 7, empty);
  UPCYCLE_CUDA(cudaDeviceSynchronize());
}

}  // namespace upcycle::test
