#include "tests/trainer/lora_reference.hpp"

#include <algorithm>
#include <cmath>

namespace upcycle::test {

double max_relative_error(std::span<const float> got, std::span<const float> want) {
  double worst = 0, scale = 0;
  for (float x : want) scale = std::max(scale, double(std::fabs(x)));
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - want[i]) / scale);
  return worst;
}

std::vector<float> merged(std::vector<float> W, const std::vector<float>& A, const std::vector<float>& B, float scale,
                          int64_t I, int64_t O, int64_t r) {
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t j = 0; j < r; ++j) W[size_t(o * I + i)] += scale * B[size_t(o * r + j)] * A[size_t(j * I + i)];
  return W;
}

void chain_rule(std::vector<float>& d_A, std::vector<float>& d_B, const std::vector<float>& d_W,
                const std::vector<float>& A, const std::vector<float>& B, float scale, int64_t I, int64_t O, int64_t r) {
  for (int64_t j = 0; j < r; ++j)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i) {
        d_A[size_t(j * I + i)] += scale * B[size_t(o * r + j)] * d_W[size_t(o * I + i)];
        d_B[size_t(o * r + j)] += scale * d_W[size_t(o * I + i)] * A[size_t(j * I + i)];
      }
}

}  // namespace upcycle::test
