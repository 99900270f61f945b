// Drop-upcycling's re-draw of an expert's neurons.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <span>

#include "pool/redraw.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::pool;

TEST_CASE("redraw: drop-upcycling re-draws the same neurons in gate, up and down, with the tensor's statistics") {
  const int64_t I = 64, H = 32;
  const std::vector<float> gate0 = test::random_values(size_t(I * H), 1), down0 = test::random_values(size_t(H * I), 2);
  const Tensor gate_t = Tensor::from_f32({I, H}, gate0), down_t = Tensor::from_f32({H, I}, down0);
  std::vector<float> gate = gate0, down = down0;
  Redraw(gate_t, Role::Gate, 0, I, 0.25, 9).apply(0, gate);
  Redraw(down_t, Role::Down, 0, I, 0.25, 9).apply(0, down);
  std::vector<int64_t> rows, cols;
  for (int64_t i = 0; i < I; ++i) {
    bool row = false, col = false;
    for (int64_t h = 0; h < H; ++h) {
      row |= gate[size_t(i * H + h)] != gate0[size_t(i * H + h)];
      col |= down[size_t(h * I + i)] != down0[size_t(h * I + i)];
    }
    if (row) rows.push_back(i);
    if (col) cols.push_back(i);
  }
  CHECK(rows.size() == 16);
  CHECK(rows == cols);
  // The re-drawn values follow the tensor's mean and deviation (uniform in [-1, 1): 0, 0.577).
  double sum = 0, sq = 0, n = 0;
  for (int64_t i : rows)
    for (int64_t h = 0; h < H; ++h) {
      const double v = gate[size_t(i * H + h)];
      sum += v, sq += v * v, n += 1;
    }
  CHECK(std::abs(sum / n) < 0.06);
  CHECK(std::sqrt(sq / n) == doctest::Approx(0.577).epsilon(0.08));
  // Block by block (odd offsets included) gives the same values; another seed other ones.
  const Redraw redraw(gate_t, Role::Gate, 0, I, 0.25, 9);
  std::vector<float> again = gate0;
  for (size_t lo = 0; lo < again.size(); lo += 77)
    redraw.apply(lo, std::span(again).subspan(lo, std::min<size_t>(77, again.size() - lo)));
  CHECK(again == gate);
  again = gate0;
  Redraw(gate_t, Role::Gate, 0, I, 0.25, 10).apply(0, again);
  CHECK(again != gate);
}

