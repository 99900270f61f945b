// The router and its auxiliary losses on the GPU against the CPU ops run in double on the same
// (fp32) inputs: selections exactly, ties included; values and gradients within tolerance<float>;
// the losses' reductions bit for bit reproducible.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "cuda/ops/router.hpp"
#include "cuda_check.hpp"
#include "trainer/ops/router.hpp"
#include "trainer/ops/router_losses.hpp"

namespace upcycle::test {

namespace {

using Doubles = std::vector<double>;

// Logits [N,E]; every third row drawn from a few multiples of 0.5, so that rows hold equal
// logits (E = 8 > 7 values always does), often among the top k.
std::vector<float> router_logits(int64_t N, int64_t E, uint64_t seed) {
  std::vector<float> x = uniform(size_t(N * E), seed, -3.f, 3.f);
  const std::vector<int32_t> q = uniform_ints(size_t(N * E), seed + 1, -3, 4);
  for (int64_t n = 0; n < N; n += 3)
    for (int64_t e = 0; e < E; ++e) x[size_t(n * E + e)] = 0.5f * float(q[size_t(n * E + e)]);
  return x;
}

// The CPU router in double on fp32 logits: the probabilities and selections the losses take.
struct Routed {
  std::vector<int32_t> idx;
  Doubles w, probs;
};
Routed cpu_route(const std::vector<float>& logits, int64_t N, int64_t E, int64_t k, bool renormalise = true) {
  Routed r{std::vector<int32_t>(size_t(N * k)), Doubles(size_t(N * k)), Doubles(size_t(N * E))};
  ops::router_forward(r.idx.data(), r.w.data(), r.probs.data(), widen(logits).data(), nullptr, N, E, k, renormalise);
  return r;
}

// An added-into output: a random start at the scale of what the op adds (so the check sees the
// contribution, not only the start), and the expectation start + contribution.
struct AddedInto {
  std::vector<float> start;
  Doubles want;
};
AddedInto added_into(const Doubles& contribution, uint64_t seed) {
  double sq = 0;
  for (double c : contribution) sq += c * c;
  const double rms = std::sqrt(sq / double(contribution.size()));
  const float scale = rms > 0 ? float(rms) : 1.f;
  AddedInto a{uniform(contribution.size(), seed, -scale, scale), Doubles(contribution.size())};
  for (size_t i = 0; i < a.want.size(); ++i) a.want[i] = double(a.start[i]) + contribution[i];
  return a;
}

// BCE targets [N]: an expert each, every fourth token -1 (not counted).
std::vector<int32_t> bce_targets(int64_t N, int64_t E, uint64_t seed) {
  std::vector<int32_t> t = uniform_ints(size_t(N), seed, 0, int32_t(E));
  for (int64_t n = 3; n < N; n += 4) t[size_t(n)] = -1;
  return t;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof(double)) == 0; }

constexpr std::pair<int64_t, int64_t> kShapes[] = {{8, 2}, {5, 3}, {8, 1}, {5, 5}};  // (E, k)

}  // namespace

TEST_CASE("router: forward as the CPU op, ties to the lower index") {
  const int64_t N = 37;
  for (auto [E, k] : kShapes) {
    CAPTURE(E);
    CAPTURE(k);
    std::vector<float> logits = router_logits(N, E, uint64_t(10 * E + k));
    // Row 1: a tie for first place, and ties among the zeros that k = 5 keeps.
    const float tied[8] = {1.f, 3.f, 3.f, 0.f, 0.f, 0.f, -1.f, 0.f};
    std::memcpy(logits.data() + E, tied, size_t(E) * sizeof(float));
    const Routed want = cpu_route(logits, N, E, k);

    auto idx = poisoned<int32_t>(size_t(N * k));
    auto w = poisoned<float>(size_t(N * k));
    auto probs = poisoned<float>(size_t(N * E));
    cuda::router_forward(idx.data(), w.data(), probs.data(), to_device<float>(logits).data(), nullptr, N, E, k, true);
    CHECK(idx.download() == want.idx);
    check_close(to_host(probs), narrow(want.probs), tolerance<float>(), "probs");
    check_close(to_host(w), narrow(want.w), tolerance<float>(), "w");
  }
}

TEST_CASE("router: a selection bias picks the experts as the CPU op, the weights stay the unbiased probabilities") {
  const int64_t N = 37;
  for (auto [E, k] : kShapes) {
    CAPTURE(E);
    CAPTURE(k);
    const std::vector<float> logits = router_logits(N, E, uint64_t(20 * E + k));
    const std::vector<float> bias = uniform(size_t(E), uint64_t(E), -0.3f, 0.3f);
    std::vector<int32_t> want_idx(size_t(N * k));
    Doubles want_w(size_t(N * k)), want_probs(size_t(N * E));
    ops::router_forward(want_idx.data(), want_w.data(), want_probs.data(), widen(logits).data(), widen(bias).data(), N, E, k,
                        true);

    auto idx = poisoned<int32_t>(size_t(N * k));
    auto w = poisoned<float>(size_t(N * k));
    auto probs = poisoned<float>(size_t(N * E));
    cuda::router_forward(idx.data(), w.data(), probs.data(), to_device<float>(logits).data(), to_device<float>(bias).data(), N,
                         E, k, true);
    CHECK(idx.download() == want_idx);
    check_close(to_host(w), narrow(want_w), tolerance<float>(), "w");
  }
}

TEST_CASE("router: forward checks top_k and does nothing for no tokens") {
  cuda::DeviceBuffer<float> buf(8);
  cuda::DeviceBuffer<int32_t> idx(8);
  for (const bool renormalise : {true, false}) {
    CAPTURE(renormalise);
    CHECK_THROWS_AS(cuda::router_forward(idx.data(), buf.data(), buf.data(), buf.data(), nullptr, 1, 4, 5, renormalise),
                    std::invalid_argument);
    CHECK_THROWS_AS(cuda::router_forward(idx.data(), buf.data(), buf.data(), buf.data(), nullptr, 1, 4, 0, renormalise),
                    std::invalid_argument);
    cuda::router_forward(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 4, 2, renormalise);
    cuda::router_backward(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 4, 2, renormalise);
  }
  UPCYCLE_CUDA(cudaDeviceSynchronize());
}

TEST_CASE("router: backward adds into d_logits as the CPU op") {
  const int64_t N = 37;
  for (auto [E, k] : kShapes) {
    CAPTURE(E);
    CAPTURE(k);
    const Routed r = cpu_route(router_logits(N, E, uint64_t(20 * E + k)), N, E, k);
    const std::vector<float> w = narrow(r.w), d_w = uniform(size_t(N * k), uint64_t(30 * E + k));
    Doubles contribution(size_t(N * E), 0.0);
    ops::router_backward(contribution.data(), widen(d_w).data(), widen(w).data(), r.probs.data(), r.idx.data(), N, E, k,
                         true);
    const AddedInto expect = added_into(contribution, uint64_t(40 * E + k));  // k = 1 adds exactly 0

    // Renormalised, probs is not read: a null pointer shows it.
    auto d_logits = to_device<float>(expect.start);
    cuda::router_backward(d_logits.data(), to_device<float>(d_w).data(), to_device<float>(w).data(), nullptr,
                          to_device_ints(r.idx).data(), N, E, k, true);
    check_close(widen(to_host(d_logits)), expect.want, tolerance<float>(), "d_logits");
  }
}

// Without renormalisation (the qwen MoEs' default): E = 40 and 200 stride lanes over several
// experts per lane in the forward and give the backward rows wider than a warp.
constexpr std::pair<int64_t, int64_t> kPlainShapes[] = {{8, 2}, {5, 3}, {8, 1}, {5, 5}, {40, 4}, {200, 8}};

TEST_CASE("router: without renormalisation the weights are the plain probabilities, as the CPU op") {
  const int64_t N = 37;
  for (auto [E, k] : kPlainShapes)
    for (const bool biased : {false, true}) {
      if (biased && E > 40) continue;  // wide rows: keys a float rounding apart would make the selection a coin toss
      CAPTURE(E);
      CAPTURE(k);
      CAPTURE(biased);
      const std::vector<float> logits = router_logits(N, E, uint64_t(140 * E + k));
      const std::vector<float> bias = uniform(size_t(E), uint64_t(150 + E), -0.3f, 0.3f);
      std::vector<int32_t> want_idx(size_t(N * k));
      Doubles want_w(size_t(N * k)), want_probs(size_t(N * E));
      ops::router_forward(want_idx.data(), want_w.data(), want_probs.data(), widen(logits).data(),
                          biased ? widen(bias).data() : nullptr, N, E, k, false);

      auto idx = poisoned<int32_t>(size_t(N * k));
      auto w = poisoned<float>(size_t(N * k));
      auto probs = poisoned<float>(size_t(N * E));
      const auto bias_dev = to_device<float>(bias);
      cuda::router_forward(idx.data(), w.data(), probs.data(), to_device<float>(logits).data(),
                           biased ? bias_dev.data() : nullptr, N, E, k, false);
      const std::vector<int32_t> got_idx = idx.download();
      CHECK(got_idx == want_idx);
      const std::vector<float> got_w = to_host(w), got_probs = to_host(probs);
      check_close(got_probs, narrow(want_probs), tolerance<float>(), "probs");
      check_close(got_w, narrow(want_w), tolerance<float>(), "w");
      // The weights are the selected probabilities themselves, bit for bit.
      if (got_idx == want_idx)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t j = 0; j < k; ++j)
            CHECK(std::memcmp(&got_w[size_t(n * k + j)], &got_probs[size_t(n * E + got_idx[size_t(n * k + j)])],
                              sizeof(float)) == 0);
    }
}

TEST_CASE("router: without renormalisation the backward adds into every logit as the CPU op") {
  for (const int64_t N : {int64_t(37), int64_t(1000)})  // 1000 · E: many blocks, a partial last one
    for (auto [E, k] : kPlainShapes) {
      CAPTURE(N);
      CAPTURE(E);
      CAPTURE(k);
      const Routed r = cpu_route(router_logits(N, E, uint64_t(160 * E + k)), N, E, k, false);
      const std::vector<float> w = narrow(r.w), probs = narrow(r.probs),
                               d_w = uniform(size_t(N * k), uint64_t(170 * E + k));
      Doubles contribution(size_t(N * E), 0.0);
      ops::router_backward(contribution.data(), widen(d_w).data(), widen(w).data(), widen(probs).data(), r.idx.data(),
                           N, E, k, false);
      const AddedInto expect = added_into(contribution, uint64_t(180 * E + k));  // k = 1 adds, unlike renormalised

      auto d_logits = to_device<float>(expect.start);
      cuda::router_backward(d_logits.data(), to_device<float>(d_w).data(), to_device<float>(w).data(),
                            to_device<float>(probs).data(), to_device_ints(r.idx).data(), N, E, k, false);
      check_close(widen(to_host(d_logits)), expect.want, tolerance<float>(), "d_logits");
    }
}

TEST_CASE("router: load-balancing loss and its gradient as the CPU op, with the batch's counts or a step's") {
  const int64_t N = 37;
  const double coef = 0.02, d_loss = 1.7;
  for (auto [E, k] : kShapes)
    for (const bool step_counts : {false, true}) {
      CAPTURE(E);
      CAPTURE(k);
      CAPTURE(step_counts);
      const Routed r = cpu_route(router_logits(N, E, uint64_t(50 * E + k)), N, E, k);
      const std::vector<float> probs = narrow(r.probs);
      const Doubles probs_d = widen(probs);
      const auto probs_dev = to_device<float>(probs);
      const auto idx_dev = to_device_ints(r.idx);
      std::vector<int64_t> step(static_cast<size_t>(E));
      for (int64_t e = 0; e < E; ++e) step[size_t(e)] = 3 * e + 5;  // global-batch counts of a step of 4 · N tokens
      const int64_t* counts = step_counts ? step.data() : nullptr;
      const int64_t tokens = step_counts ? 4 * N : 0;

      const double want = ops::load_balancing_loss_forward(probs_d.data(), r.idx.data(), N, E, k, coef, counts, tokens);
      const double got = cuda::load_balancing_loss_forward(probs_dev.data(), idx_dev.data(), N, E, k, coef, counts, tokens);
      check_close(Doubles{got}, Doubles{want}, tolerance<float>(), "loss");

      Doubles contribution(size_t(N * E), 0.0);
      ops::load_balancing_loss_backward(contribution.data(), probs_d.data(), r.idx.data(), N, E, k, coef, d_loss, counts,
                                        tokens);
      const AddedInto expect = added_into(contribution, uint64_t(60 * E + k));
      auto d_logits = to_device<float>(expect.start);
      cuda::load_balancing_loss_backward(d_logits.data(), probs_dev.data(), idx_dev.data(), N, E, k, coef, d_loss, counts,
                                         tokens);
      check_close(widen(to_host(d_logits)), expect.want, tolerance<float>(), "d_logits");
    }
}

TEST_CASE("router: load-balancing loss rejects an expert index outside 0 to E-1") {
  const int64_t N = 5, E = 4, k = 2;
  const auto probs = to_device<float>(uniform(size_t(N * E), 1, 0.f, 1.f));
  for (int32_t bad : {-1, int32_t(E)}) {
    CAPTURE(bad);
    const auto idx = to_device_ints({0, 1, 2, 3, 1, 0, bad, 2, 3, 1});
    CHECK_THROWS_AS(cuda::load_balancing_loss_forward(probs.data(), idx.data(), N, E, k, 0.01), std::invalid_argument);
  }
  CHECK(cuda::load_balancing_loss_forward(nullptr, nullptr, 0, E, k, 0.01) == 0.0);
}

TEST_CASE("router: z-loss and its gradient as the CPU op") {
  const int64_t N = 37;
  const double coef = 0.05, d_loss = 0.8;
  for (int64_t E : {8, 5, 40}) {  // 40: lanes hold two experts each, or one
    CAPTURE(E);
    const std::vector<float> logits = uniform(size_t(N * E), uint64_t(70 + E), -3.f, 3.f);
    const Doubles logits_d = widen(logits);
    const auto logits_dev = to_device<float>(logits);
    check_close(Doubles{cuda::router_z_loss_forward(logits_dev.data(), N, E, coef)},
                Doubles{ops::router_z_loss_forward(logits_d.data(), N, E, coef)}, tolerance<float>(), "loss");

    Doubles contribution(size_t(N * E), 0.0);
    ops::router_z_loss_backward(contribution.data(), logits_d.data(), N, E, coef, d_loss);
    const AddedInto expect = added_into(contribution, uint64_t(80 + E));
    auto d_logits = to_device<float>(expect.start);
    cuda::router_z_loss_backward(d_logits.data(), logits_dev.data(), N, E, coef, d_loss);
    check_close(widen(to_host(d_logits)), expect.want, tolerance<float>(), "d_logits");
  }
}

TEST_CASE("router: UpIT's router BCE and its gradient as the CPU op, -1 targets not counted") {
  const int64_t N = 37;
  const double coef = 0.5, d_loss = 1.3;
  for (int64_t E : {8, 5}) {
    CAPTURE(E);
    const std::vector<float> logits = uniform(size_t(N * E), uint64_t(90 + E), -6.f, 6.f);
    const std::vector<int32_t> targets = bce_targets(N, E, uint64_t(100 + E));
    const Doubles logits_d = widen(logits);
    const auto logits_dev = to_device<float>(logits);
    const auto targets_dev = to_device_ints(targets);
    check_close(Doubles{cuda::router_bce_loss_forward(logits_dev.data(), targets_dev.data(), N, E, coef)},
                Doubles{ops::router_bce_loss_forward(logits_d.data(), targets.data(), N, E, coef)}, tolerance<float>(),
                "loss");

    Doubles contribution(size_t(N * E), 0.0);
    ops::router_bce_loss_backward(contribution.data(), logits_d.data(), targets.data(), N, E, coef, d_loss);
    const AddedInto expect = added_into(contribution, uint64_t(110 + E));
    auto d_logits = to_device<float>(expect.start);
    cuda::router_bce_loss_backward(d_logits.data(), logits_dev.data(), targets_dev.data(), N, E, coef, d_loss);
    const std::vector<float> got = to_host(d_logits);
    check_close(widen(got), expect.want, tolerance<float>(), "d_logits");
    for (int64_t n = 3; n < N; n += 4)  // uncounted tokens: untouched, bit for bit
      CHECK(std::memcmp(got.data() + n * E, expect.start.data() + n * E, size_t(E) * sizeof(float)) == 0);
  }
}

TEST_CASE("router: router BCE without counted tokens is 0 and adds nothing, bad targets throw") {
  const int64_t N = 5, E = 3;
  const auto logits = to_device<float>(uniform(size_t(N * E), 120, -2.f, 2.f));
  const auto none = to_device_ints(std::vector<int32_t>(size_t(N), -1));
  CHECK(cuda::router_bce_loss_forward(logits.data(), none.data(), N, E, 0.5) == 0.0);
  const std::vector<float> start = uniform(size_t(N * E), 121);
  auto d = to_device<float>(start);
  cuda::router_bce_loss_backward(d.data(), logits.data(), none.data(), N, E, 0.5, 1.0);
  CHECK(same_bits(to_host(d), start));
  for (int32_t bad : {-2, int32_t(E), 100}) {
    CAPTURE(bad);
    const auto t = to_device_ints({0, 1, bad, 2, -1});
    CHECK_THROWS_AS(cuda::router_bce_loss_forward(logits.data(), t.data(), N, E, 0.5), std::invalid_argument);
  }
}

TEST_CASE("router: losses and gradients give the same bits on every run") {
  // Enough rows for many blocks of the row reductions and of the selection counts.
  const int64_t N = 5000, E = 8, k = 2;
  const std::vector<float> logits = uniform(size_t(N * E), 130, -4.f, 4.f);
  const std::vector<float> start = uniform(size_t(N * E), 131);
  const auto logits_dev = to_device<float>(logits);
  const auto targets_dev = to_device_ints(bce_targets(N, E, 132));
  auto idx = poisoned<int32_t>(size_t(N * k));
  auto w = poisoned<float>(size_t(N * k));
  auto probs = poisoned<float>(size_t(N * E));
  cuda::router_forward(idx.data(), w.data(), probs.data(), logits_dev.data(), nullptr, N, E, k, true);

  struct Run {
    double losses[3];
    std::vector<float> grads[3];
  };
  auto run = [&] {
    Run r;
    r.losses[0] = cuda::load_balancing_loss_forward(probs.data(), idx.data(), N, E, k, 0.01);
    r.losses[1] = cuda::router_z_loss_forward(logits_dev.data(), N, E, 0.001);
    r.losses[2] = cuda::router_bce_loss_forward(logits_dev.data(), targets_dev.data(), N, E, 0.5);
    for (int i = 0; i < 3; ++i) {
      auto d = to_device<float>(start);
      if (i == 0) cuda::load_balancing_loss_backward(d.data(), probs.data(), idx.data(), N, E, k, 0.01, 0.7);
      if (i == 1) cuda::router_z_loss_backward(d.data(), logits_dev.data(), N, E, 0.001, 0.7);
      if (i == 2) cuda::router_bce_loss_backward(d.data(), logits_dev.data(), targets_dev.data(), N, E, 0.5, 0.7);
      r.grads[i] = to_host(d);
    }
    return r;
  };
  const Run a = run(), b = run();
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(same_bits(a.losses[i], b.losses[i]));
    CHECK(same_bits(a.grads[i], b.grads[i]));
  }
}

}  // namespace upcycle::test
