// The LoRA term on the GPU against the CPU op (trainer/ops/lora.hpp) on the same inputs: the
// dropout's output bit for bit, forward and backward with and without dropout, gradients not
// wanted, and no rows.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "cuda/ops/lora.hpp"
#include "cuda_check.hpp"
#include "trainer/ops/lora.hpp"

namespace upcycle::test {

namespace {

using cuda::bf16;

// The GPU's dropout on n values equals the CPU's bit for bit, out of place and in place: the same
// mask, and the same product in/(1 − p) (for bf16, the CPU's on the same bf16 input rounded once,
// as the GPU rounds it). Returns how many the CPU dropped, so a case can see its mask is not empty.
template <class T>
int64_t check_dropout(int64_t n, const ops::LoraDropout& drop, uint64_t seed) {
  const std::vector<float> in = stored<T>(uniform(size_t(n), seed));
  std::vector<float> want(in.size());
  ops::lora_dropout(want.data(), in.data(), n, drop);
  want = stored<T>(want);
  auto g_in = to_device<T>(in);
  auto g_out = poisoned<T>(size_t(n));
  cuda::lora_dropout<T>(g_out.data(), g_in.data(), n, drop);
  CHECK(same_bits(to_host(g_out), want));
  cuda::lora_dropout<T>(g_in.data(), g_in.data(), n, drop);
  CHECK(same_bits(to_host(g_in), want));
  int64_t dropped = 0;
  for (float v : want) dropped += v == 0.0f;
  return dropped;
}

// Added-into outputs start at random values up to 0.25, beside a term of RMS about 1 in out and d_in
// and 4 to 6 in d_A and d_B: an op that wrote instead of adding would be off by more than 1e-2 of
// their scale in many elements.
constexpr float kStart = 0.25f;

struct Wanted {
  bool in = true, a = true, b = true;
};

// Forward, then backward, by the CPU op and by the GPU op on the same values (activations, A and B
// rounded to bf16 for a bf16 run: the GPU multiplies by bf16 copies of A and B, lora.hpp), every
// output compared, unwanted gradients included (both must leave them at their start).
// Tolerances: float, tolerance<float>(): the CPU op is float too, and two float computations of
// these sums differ only in their order (1e-6 at most here). bf16, tolerance<bf16>(): the GPU rounds
// out and d_in once (2^-8 at most) and the [N,r] factor that meets a bf16 operand before d_A and
// d_B; a simulation of this chain on these shapes (2500 runs) gave at most 8.4e-3 in check_close's
// measure. Every element of the term scales with `scale` (5/√(r·I), on inputs uniform in [-1, 1)) and
// with 1/(1 − p) (at least 1/0.9 here), so either one wrong moves them all by 10% or more; a mask
// missing or different drops or keeps a tenth of the inputs or more otherwise, which moves many by
// more than 1e-2.
template <class T>
void check_lora(int64_t N, int64_t I, int64_t O, int64_t r, const ops::LoraDropout& drop, Wanted wanted,
                uint64_t seed) {
  const float scale = 5 / std::sqrt(float(r * I));
  const std::vector<float> x = stored<T>(uniform(size_t(N * I), seed)),
                           d_out = stored<T>(uniform(size_t(N * O), seed + 1)),
                           A = stored<T>(uniform(size_t(r * I), seed + 2)),
                           B = stored<T>(uniform(size_t(O * r), seed + 3)),
                           out0 = stored<T>(uniform(size_t(N * O), seed + 4, -kStart, kStart)),
                           d_in0 = stored<T>(uniform(size_t(N * I), seed + 5, -kStart, kStart)),
                           d_A0 = uniform(size_t(r * I), seed + 6, -kStart, kStart),
                           d_B0 = uniform(size_t(O * r), seed + 7, -kStart, kStart);

  std::vector<float> out = out0, d_in = d_in0, d_A = d_A0, d_B = d_B0;
  ops::lora_forward(out.data(), x.data(), A.data(), B.data(), scale, N, I, O, r, drop);
  ops::lora_backward(wanted.in ? d_in.data() : nullptr, wanted.a ? d_A.data() : nullptr,
                     wanted.b ? d_B.data() : nullptr, d_out.data(), x.data(), A.data(), B.data(), scale, N, I, O, r,
                     drop);

  const auto g_x = to_device<T>(x), g_d_out = to_device<T>(d_out);
  const auto g_A = to_device<float>(A), g_B = to_device<float>(B);
  auto g_out = to_device<T>(out0), g_d_in = to_device<T>(d_in0);
  auto g_d_A = to_device<float>(d_A0), g_d_B = to_device<float>(d_B0);
  cuda::lora_forward<T>(g_out.data(), g_x.data(), g_A.data(), g_B.data(), scale, N, I, O, r, drop);
  cuda::lora_backward<T>(wanted.in ? g_d_in.data() : nullptr, wanted.a ? g_d_A.data() : nullptr,
                         wanted.b ? g_d_B.data() : nullptr, g_d_out.data(), g_x.data(), g_A.data(), g_B.data(), scale,
                         N, I, O, r, drop);
  const double tol = tolerance<T>();
  check_close(to_host(g_out), out, tol, "out");
  check_close(to_host(g_d_in), d_in, tol, "d_in");
  check_close(to_host(g_d_A), d_A, tol, "d_A");
  check_close(to_host(g_d_B), d_B, tol, "d_B");
}

}  // namespace

TEST_CASE("lora: the dropout's output is the CPU's bit for bit, float and bf16") {
  // 100003 values: a partial last block. About p of them dropped, so the mask is not trivially equal.
  const int64_t n = 100003;
  for (const ops::LoraDropout drop : {ops::LoraDropout{0.3f, 77}, ops::LoraDropout{0.1f, ~uint64_t(0)}}) {
    CAPTURE(drop.p);
    for (int64_t dropped : {check_dropout<float>(n, drop, 1), check_dropout<bf16>(n, drop, 2)})
      CHECK(std::fabs(double(dropped) / double(n) - drop.p) < 0.01);
  }
  // As the CPU's, the op applies its mask whatever active() says: seed 0, and p = 0 (all kept)
  // and p = 1 (all dropped).
  CHECK(check_dropout<float>(n, {0.3f, 0}, 3) > 0);
  CHECK(check_dropout<bf16>(1000, {0.0f, 5}, 4) == 0);
  CHECK(check_dropout<float>(1000, {1.0f, 6}, 5) == 1000);
  CHECK_NOTHROW(cuda::lora_dropout<float>(nullptr, nullptr, 0, {0.3f, 7}));
}

TEST_CASE("lora: forward and backward against the CPU, float and bf16") {
  // Odd sizes: rank 3 on 37 inputs, one row, a rank of 1, and more rows than a block.
  check_lora<float>(37, 37, 65, 3, {}, {}, 10);
  check_lora<bf16>(37, 37, 65, 3, {}, {}, 11);
  check_lora<float>(1, 7, 9, 1, {}, {}, 12);
  check_lora<bf16>(1, 7, 9, 1, {}, {}, 13);
  check_lora<float>(300, 129, 65, 8, {}, {}, 14);
  check_lora<bf16>(300, 129, 65, 8, {}, {}, 15);
}

TEST_CASE("lora: with dropout the GPU masks the elements the CPU masks, forward and backward") {
  check_lora<float>(37, 37, 65, 3, {0.3f, 1234}, {}, 20);
  check_lora<bf16>(37, 37, 65, 3, {0.3f, 1234}, {}, 21);
  check_lora<float>(300, 129, 65, 8, {0.1f, 99}, {}, 22);
  check_lora<bf16>(300, 129, 65, 8, {0.1f, 99}, {}, 23);
  // p >= 1 drops everything: the term and its gradients add nothing on either side.
  check_lora<float>(5, 37, 16, 3, {1.0f, 5}, {}, 24);
}

TEST_CASE("lora: gradients not wanted (null pointers) are left alone, the others still right") {
  check_lora<float>(37, 37, 65, 3, {}, {.in = false}, 30);
  check_lora<float>(37, 37, 65, 3, {}, {.a = false}, 31);
  check_lora<bf16>(37, 37, 65, 3, {}, {.b = false}, 32);
  check_lora<bf16>(37, 37, 65, 3, {0.3f, 8}, {.a = false, .b = false}, 33);
  check_lora<float>(37, 37, 65, 3, {0.3f, 9}, {.in = false, .b = false}, 34);
  check_lora<bf16>(37, 37, 65, 3, {}, {.in = false, .a = false, .b = false}, 35);
}

TEST_CASE("lora: no rows do nothing, bad sizes are refused") {
  const int64_t I = 37, O = 16, r = 3;
  const std::vector<float> d_A0 = uniform(size_t(r * I), 40), d_B0 = uniform(size_t(O * r), 41);
  const auto A = to_device<float>(uniform(size_t(r * I), 42)), B = to_device<float>(uniform(size_t(O * r), 43));
  auto d_A = to_device<float>(d_A0), d_B = to_device<float>(d_B0);
  CHECK_NOTHROW(cuda::lora_forward<bf16>(nullptr, nullptr, A.data(), B.data(), 1.f, 0, I, O, r, {0.3f, 1}));
  CHECK_NOTHROW(cuda::lora_backward<bf16>(nullptr, d_A.data(), d_B.data(), nullptr, nullptr, A.data(), B.data(), 1.f,
                                          0, I, O, r, {0.3f, 1}));
  CHECK(same_bits(d_A.download(), d_A0));
  CHECK(same_bits(d_B.download(), d_B0));
  CHECK_THROWS_AS(cuda::lora_forward<float>(nullptr, nullptr, nullptr, nullptr, 1.f, 4, I, O, 0),
                  std::invalid_argument);
  CHECK_THROWS_AS(cuda::lora_backward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1.f, -1, I,
                                             O, r),
                  std::invalid_argument);
}

}  // namespace upcycle::test
