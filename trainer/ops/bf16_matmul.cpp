#include "trainer/ops/bf16_matmul.hpp"

#include <algorithm>
#include <bit>
#include <vector>

#include <Eigen/Core>
#include <oneapi/dnnl/dnnl.hpp>

namespace upcycle::ops {

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};

Context& context() {
  static Context c;
  return c;
}

// Whether the CPU multiplies bf16 in hardware (AVX512-BF16 dot products or AMX tiles). Without,
// oneDNN emulates bf16 at a quarter of sgemm's speed or less, so the products run as sgemm.
bool native_bf16() {
  static const bool native = [] {
    const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
    return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
  }();
  return native;
}

float widen(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

using RowsF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// product() without bf16 hardware: the bf16 values widened to f32 (exactly) and multiplied by
// sgemm (Eigen over OpenBLAS). A bf16 product is exact in f32, so this is the same arithmetic as
// oneDNN's, f32 sums included, in sgemm's order: the same bits for a fixed CPU and thread count.
// B is widened 256 of its columns at a time, so a large weight never has an f32 copy.
void widened_product(float* out, int64_t out_stride, const uint16_t* a, dnnl::memory::dims a_strides,
                     const uint16_t* b, int64_t N, int64_t K, int64_t M, bool b_is_w, bool accumulate) {
  constexpr int64_t kPanel = 256;
  RowsF A(N, K), Bt;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) A(n, k) = widen(a[n * a_strides[0] + k * a_strides[1]]);
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

// out[N,M] (+)= a[N,K] · B[K,M], out's rows out_stride apart, a's element (n, k) at
// a[n·a_strides[0] + k·a_strides[1]] (a row-major matrix, or a transposed one), B read in place as
// `b_layout` lays it out: ba for W [M,K] as nn.Linear stores it (the forward), ab for W [K,M]
// (the backward to the inputs, and an input [K,M] in the weight's gradient).
void product(float* out, int64_t out_stride, const uint16_t* a, dnnl::memory::dims a_strides, const uint16_t* b,
             int64_t N, int64_t K, int64_t M, tag b_layout, bool accumulate) {
  if (N == 0 || M == 0) return;
  if (K == 0) {
    if (!accumulate)
      for (int64_t n = 0; n < N; ++n) std::fill_n(out + n * out_stride, M, 0.0f);
    return;
  }
  if (!native_bf16()) return widened_product(out, out_stride, a, a_strides, b, N, K, M, b_layout == tag::ba, accumulate);
  Context& c = context();
  const dnnl::memory::desc src({N, K}, dt::bf16, a_strides), weights({K, M}, dt::bf16, b_layout),
      dst({N, M}, dt::f32, {out_stride, 1});
  dnnl::primitive_attr attr;
  if (accumulate) {
    dnnl::post_ops sum;
    sum.append_sum(1.0f);
    attr.set_post_ops(sum);
  }
  // oneDNN caches the primitives it makes (1024 by default), so shapes seen before cost a lookup.
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weights, dst), attr, c.engine);
  dnnl::memory s(src, c.engine, const_cast<uint16_t*>(a)), w(weights, c.engine, const_cast<uint16_t*>(b)), d(dst, c.engine, out);
  dnnl::matmul(pd).execute(c.stream, {{DNNL_ARG_SRC, s}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, d}});
  c.stream.wait();
}

}  // namespace

void bf16_matmul_forward(float* out, const uint16_t* in, const uint16_t* W, int64_t N, int64_t I, int64_t O) {
  product(out, O, in, {I, 1}, W, N, I, O, tag::ba, false);  // W [O,I] row major is [I,O] with the format tag ba
}

void bf16_matmul_backward_input(float* d_in, const uint16_t* d_out, const uint16_t* W, int64_t N, int64_t I, int64_t O) {
  product(d_in, I, d_out, {O, 1}, W, N, O, I, tag::ab, true);
}

void bf16_matmul_backward_weight(float* d_W, const uint16_t* d_out, const uint16_t* in, int64_t N, int64_t I,
                                 int64_t O) {
  product(d_W, I, d_out, {1, O}, in, O, N, I, tag::ab, true);  // d_outᵀ [O,N]: d_out read transposed
}

void bf16_matmul_forward_panel(float* out, int64_t out_stride, const uint16_t* in, const uint16_t* Wp, int64_t N,
                               int64_t I, int64_t P) {
  product(out, out_stride, in, {I, 1}, Wp, N, I, P, tag::ba, false);
}

void bf16_matmul_backward_input_panel(float* d_in, const uint16_t* d_out, int64_t in_stride, const uint16_t* Wp,
                                      int64_t N, int64_t I, int64_t P) {
  product(d_in, I, d_out, {in_stride, 1}, Wp, N, P, I, tag::ab, true);
}

std::string bf16_matmul_isa() {
  if (!native_bf16()) return "sgemm (no AVX512-BF16 or AMX here)";
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx2: return "avx2";
    default: return "other";
  }
}

}  // namespace upcycle::ops
