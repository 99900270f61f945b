#include "trainer/ops/embedding.hpp"

#include <algorithm>

#include "trainer/ops/check.hpp"

namespace upcycle::ops {

namespace {
void check_ids(const int32_t* ids, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n)
    require_arg(ids[n] >= 0 && ids[n] < V, "embedding", "token id " + std::to_string(ids[n]) + " outside the table");
}
}  // namespace

template <class T>
void embedding_forward(T* out, const T* table, const int32_t* ids, int64_t N, int64_t H, int64_t V) {
  check_ids(ids, N, V);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) std::copy_n(table + ids[n] * H, H, out + n * H);
}

template <class T>
void embedding_backward(T* d_table, const T* d_out, const int32_t* ids, int64_t N, int64_t H, int64_t V) {
  check_ids(ids, N, V);
  // Tokens repeat, so threads split the columns rather than the tokens: no two threads touch the
  // same element, and each element sums its tokens in token order (deterministic).
  constexpr int64_t kCols = 64;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < H; c0 += kCols) {
    const int64_t c1 = std::min(H, c0 + kCols);
    for (int64_t n = 0; n < N; ++n) {
      T* dst = d_table + ids[n] * H;
      const T* src = d_out + n * H;
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

template void embedding_forward(float*, const float*, const int32_t*, int64_t, int64_t, int64_t);
template void embedding_forward(double*, const double*, const int32_t*, int64_t, int64_t, int64_t);
template void embedding_backward(float*, const float*, const int32_t*, int64_t, int64_t, int64_t);
template void embedding_backward(double*, const double*, const int32_t*, int64_t, int64_t, int64_t);

}  // namespace upcycle::ops
