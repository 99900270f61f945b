#include "trainer/ops/bf16_matmul.hpp"

#include <algorithm>
#include <bit>
#include <vector>

#include <Eigen/Core>

#include "trainer/ops/onednn_product.hpp"

namespace upcycle::ops {

namespace {

float widen(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

using RowsF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// product() without bf16 hardware, where oneDNN emulates bf16 at a quarter of sgemm's speed or
// less: the bf16 values widened to f32 (exactly) and multiplied by sgemm (Eigen over OpenBLAS). A
// bf16 product is exact in f32, so this is the same arithmetic as oneDNN's, f32 sums included, in
// sgemm's order: the same bits for a fixed CPU and thread count. B is widened 256 of its columns at
// a time, so a large weight never has an f32 copy.
void widened_product(float* out, int64_t out_stride, const uint16_t* a, int64_t a_row_stride, int64_t a_col_stride,
                     const uint16_t* b, int64_t N, int64_t K, int64_t M, bool b_is_w, bool accumulate) {
  constexpr int64_t kPanel = 256;
  RowsF A(N, K), Bt;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) A(n, k) = widen(a[n * a_row_stride + k * a_col_stride]);
  for (int64_t m0 = 0; m0 < M; m0 += kPanel) {
    const int64_t mb = std::min(kPanel, M - m0);
    Bt.resize(mb, K);  // B's columns m0.. as rows
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < mb; ++j)
      for (int64_t k = 0; k < K; ++k) Bt(j, k) = widen(b_is_w ? b[(m0 + j) * K + k] : b[k * M + m0 + j]);
    Eigen::Map<RowsF, 0, Eigen::OuterStride<>> o(out + m0, N, mb, Eigen::OuterStride<>(out_stride));
    if (accumulate) o.noalias() += A * Bt.transpose();
    else o.noalias() = A * Bt.transpose();
  }
}

// out[N,M] (+)= a[N,K] · B[K,M] as onednn_product takes it, in bf16.
void product(float* out, int64_t out_stride, const uint16_t* a, int64_t a_row_stride, int64_t a_col_stride,
             const uint16_t* b, int64_t N, int64_t K, int64_t M, BLayout b_layout, bool accumulate) {
  if (onednn_native_bf16())
    return onednn_product(out, out_stride, a, a_row_stride, a_col_stride, b, b_layout, ProductType::BF16, N, K, M,
                          accumulate);
  if (N == 0 || M == 0) return;
  widened_product(out, out_stride, a, a_row_stride, a_col_stride, b, N, K, M, b_layout == BLayout::Transposed,
                  accumulate);
}

}  // namespace

void bf16_matmul_forward(float* out, const uint16_t* in, const uint16_t* W, int64_t N, int64_t I, int64_t O) {
  product(out, O, in, I, 1, W, N, I, O, BLayout::Transposed, false);
}

void bf16_matmul_backward_input(float* d_in, const uint16_t* d_out, const uint16_t* W, int64_t N, int64_t I, int64_t O) {
  product(d_in, I, d_out, O, 1, W, N, O, I, BLayout::Plain, true);
}

void bf16_matmul_backward_weight(float* d_W, const uint16_t* d_out, const uint16_t* in, int64_t N, int64_t I,
                                 int64_t O) {
  product(d_W, I, d_out, 1, O, in, O, N, I, BLayout::Plain, true);  // d_outᵀ [O,N]: d_out read transposed
}

void bf16_matmul_forward_panel(float* out, int64_t out_stride, const uint16_t* in, const uint16_t* Wp, int64_t N,
                               int64_t I, int64_t P) {
  product(out, out_stride, in, I, 1, Wp, N, I, P, BLayout::Transposed, false);
}

void bf16_matmul_backward_input_panel(float* d_in, const uint16_t* d_out, int64_t in_stride, const uint16_t* Wp,
                                      int64_t N, int64_t I, int64_t P) {
  product(d_in, I, d_out, in_stride, 1, Wp, N, P, I, BLayout::Plain, true);
}

std::string bf16_matmul_isa() {
  return onednn_native_bf16() ? onednn_isa() : "sgemm (no AVX512-BF16 or AMX here)";
}

}  // namespace upcycle::ops
