#include "trainer/ops/onednn_product.hpp"

#include <algorithm>
#include <array>

#include <oneapi/dnnl/dnnl.hpp>

namespace upcycle::ops {

namespace {

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};

Context& context() {
  static Context c;
  return c;
}

// oneDNN's ISA values are sets of feature bits: a later ISA holds every bit of an earlier one.
bool onednn_has(dnnl::cpu_isa isa) {
  const int here = int(dnnl::get_effective_cpu_isa());
  return (here & int(isa)) == int(isa);
}

bool onednn_amx() {
  static const bool amx = onednn_has(dnnl::cpu_isa::avx512_core_amx);
  return amx;
}

thread_local int varying_rows_depth = 0;

}  // namespace

VaryingRows::VaryingRows() { ++varying_rows_depth; }
VaryingRows::~VaryingRows() { --varying_rows_depth; }
bool VaryingRows::active() { return varying_rows_depth > 0; }

void onednn_product(float* out, int64_t out_stride, const void* a, int64_t a_row_stride, int64_t a_col_stride,
                    const void* b, BLayout b_layout, ProductType type, int64_t N, int64_t K, int64_t M,
                    bool accumulate) {
  using dt = dnnl::memory::data_type;
  if (N == 0 || M == 0) return;
  if (K == 0) {
    if (!accumulate)
      for (int64_t n = 0; n < N; ++n) std::fill_n(out + n * out_stride, M, 0.0f);
    return;
  }
  Context& c = context();
  const dt in_type = type == ProductType::F32 ? dt::f32 : dt::bf16;
  const dnnl::memory::dims b_strides = b_layout == BLayout::Transposed ? dnnl::memory::dims{1, K} : dnnl::memory::dims{M, 1};
  // a, b and out as [n, k], [k, M] and [n, M] with the given strides.
  const auto descs = [&](dnnl::memory::dim n, dnnl::memory::dim k) {
    return std::array<dnnl::memory::desc, 3>{dnnl::memory::desc({n, k}, in_type, {a_row_stride, a_col_stride}),
                                             dnnl::memory::desc({k, M}, in_type, b_strides),
                                             dnnl::memory::desc({n, M}, dt::f32, {out_stride, 1})};
  };
  dnnl::primitive_attr attr;
  if (accumulate) {
    dnnl::post_ops sum;
    sum.append_sum(1.0f);
    attr.set_post_ops(sum);
  }
  // oneDNN caches the primitives it makes (1024 by default), so shapes seen before cost a lookup
  // (about 2-6 µs a call, against 70 µs for a 256³ product); a new shape costs a JIT compilation
  // (0.15-0.6 ms). Under VaryingRows N and K are left to run time instead (the strides stay
  // given: for strides left to run time oneDNN has only its reference kernel), so that one
  // primitive serves every row count: oneDNN's JIT GEMM, within 15% of the shaped kernels here.
  // Not for bf16 on AMX, which that GEMM does not use.
  const bool any_rows = VaryingRows::active() && !(type == ProductType::BF16 && onednn_amx());
  constexpr dnnl::memory::dim R = DNNL_RUNTIME_DIM_VAL;
  const auto used = descs(N, K), made = any_rows ? descs(R, R) : used;
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(made[0], made[1], made[2]), attr, c.engine);
  dnnl::memory s(used[0], c.engine, const_cast<void*>(a)), w(used[1], c.engine, const_cast<void*>(b)),
      d(used[2], c.engine, out);
  dnnl::matmul(pd).execute(c.stream, {{DNNL_ARG_SRC, s}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, d}});
  c.stream.wait();
}

std::string onednn_isa() {
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

bool onednn_native_bf16() {
  static const bool native = onednn_has(dnnl::cpu_isa::avx512_core_bf16);
  return native;
}

bool f32_products_on_onednn() {
  static const bool yes = onednn_has(dnnl::cpu_isa::avx512_core);
  return yes;
}

}  // namespace upcycle::ops
