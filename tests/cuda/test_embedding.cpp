// Embedding on the GPU against trainer/ops: the lookup exactly, the backward's sums of repeated
// ids in token order (the CPU float op's bits), run after run.
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>
#include <type_traits>

#include "cuda/ops/embedding.hpp"
#include "cuda_check.hpp"
#include "trainer/ops/embedding.hpp"

namespace upcycle::test {

namespace {

template <class T>
void check_embedding(int64_t N, int64_t H, int64_t V, uint64_t seed) {
  std::vector<int32_t> ids = uniform_ints(size_t(N), seed, 0, int32_t(V));
  for (int64_t n = 0; n < N; n += 3) ids[size_t(n)] = 5;  // a long run of one id
  const std::vector<float> table = stored<T>(uniform(size_t(V * H), seed + 1));
  const std::vector<float> d_out = stored<T>(uniform(size_t(N * H), seed + 2));
  const cuda::DeviceBuffer<int32_t> d_ids = to_device_ints(ids);
  const cuda::DeviceBuffer<T> d_table_in = to_device<T>(table), d_d_out = to_device<T>(d_out);

  // forward: a copy, exact
  cuda::DeviceBuffer<T> out = poisoned<T>(size_t(N * H));
  cuda::embedding_forward(out.data(), d_table_in.data(), d_ids.data(), N, H, V);
  std::vector<double> want_out(size_t(N * H));
  ops::embedding_forward(want_out.data(), widen(table).data(), ids.data(), N, H, V);
  check_close(widen(to_host(out)), want_out, 0, "out");

  // backward, into a random start
  const std::vector<float> start = uniform(size_t(V * H), seed + 3);
  cuda::DeviceBuffer<float> d_table = to_device<float>(start);
  cuda::embedding_backward(d_table.data(), d_d_out.data(), d_ids.data(), N, H, V);
  const std::vector<float> got = to_host(d_table);
  std::vector<double> want = widen(start);
  ops::embedding_backward(want.data(), widen(d_out).data(), ids.data(), N, H, V);
  // fp32 sums of inputs held exactly, whatever T: float's tolerance.
  check_close(widen(got), want, tolerance<float>(), "d_table");

  // Each element starts from its value and adds its tokens' rows one by one in token order, as
  // the CPU's float op does: the same bits as that op, and as a second run.
  std::vector<float> cpu = start;
  ops::embedding_backward(cpu.data(), d_out.data(), ids.data(), N, H, V);
  CHECK(got == cpu);
  cuda::DeviceBuffer<float> again = to_device<float>(start);
  cuda::embedding_backward(again.data(), d_d_out.data(), d_ids.data(), N, H, V);
  CHECK(to_host(again) == got);
}

}  // namespace

TEST_CASE("embedding: lookup and backward with repeated ids, float and bf16") {
  // H = 300 and 129: column blocks of 256, the last partial. V = 11 < N: ids repeat; V = 50000:
  // keys of 16 bits, several radix passes.
  SUBCASE("float") {
    check_embedding<float>(37, 300, 11, 1);
    check_embedding<float>(1000, 129, 50000, 2);
  }
  SUBCASE("bf16") {
    check_embedding<cuda::bf16>(37, 300, 11, 3);
    check_embedding<cuda::bf16>(1000, 129, 50000, 4);
  }
}

TEST_CASE("embedding: an id outside the table reads as NaN and adds nothing") {
  const int64_t N = 4, H = 70, V = 6;
  const std::vector<int32_t> ids = {2, 6, -1, 2};
  const std::vector<float> table = uniform(size_t(V * H), 5), d_out = uniform(size_t(N * H), 6);
  const cuda::DeviceBuffer<int32_t> d_ids = to_device_ints(ids);
  const cuda::DeviceBuffer<float> d_table_in = to_device<float>(table), d_d_out = to_device<float>(d_out);

  cuda::DeviceBuffer<float> out = poisoned<float>(size_t(N * H));
  cuda::embedding_forward(out.data(), d_table_in.data(), d_ids.data(), N, H, V);
  const std::vector<float> got_out = to_host(out);
  for (int64_t c = 0; c < H; ++c) {
    CHECK(got_out[size_t(c)] == table[size_t(2 * H + c)]);
    CHECK(std::isnan(got_out[size_t(H + c)]));
    CHECK(std::isnan(got_out[size_t(2 * H + c)]));
    CHECK(got_out[size_t(3 * H + c)] == table[size_t(2 * H + c)]);
  }

  // Only tokens 0 and 3 (both id 2) add their rows.
  const std::vector<float> start = uniform(size_t(V * H), 7);
  cuda::DeviceBuffer<float> d_table = to_device<float>(start);
  cuda::embedding_backward(d_table.data(), d_d_out.data(), d_ids.data(), N, H, V);
  std::vector<float> want = start;
  for (int64_t c = 0; c < H; ++c) {
    want[size_t(2 * H + c)] += d_out[size_t(c)];
    want[size_t(2 * H + c)] += d_out[size_t(3 * H + c)];
  }
  CHECK(to_host(d_table) == want);
}

TEST_CASE("embedding: negative sizes are refused") {
  CHECK_THROWS_AS(cuda::embedding_forward<float>(nullptr, nullptr, nullptr, -1, 4, 4), std::invalid_argument);
  CHECK_THROWS_AS(cuda::embedding_backward<cuda::bf16>(nullptr, nullptr, nullptr, 4, -1, 4), std::invalid_argument);
}

}  // namespace upcycle::test
