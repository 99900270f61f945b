#include "trainer/ops/bf16_matmul.hpp"

#include <algorithm>

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

}  // namespace

void bf16_matmul_forward(float* out, const uint16_t* in, const uint16_t* W, int64_t N, int64_t I, int64_t O) {
  if (N == 0 || O == 0) return;
  if (I == 0) {
    std::fill_n(out, N * O, 0.0f);
    return;
  }
  Context& c = context();
  // W [O,I] row major is [I,O] with the format tag ba: the product reads it in place.
  const dnnl::memory::desc src({N, I}, dt::bf16, tag::ab), weights({I, O}, dt::bf16, tag::ba), dst({N, O}, dt::f32, tag::ab);
  // oneDNN caches the primitives it makes (1024 by default), so shapes seen before cost a lookup.
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weights, dst), c.engine);
  dnnl::memory s(src, c.engine, const_cast<uint16_t*>(in)), w(weights, c.engine, const_cast<uint16_t*>(W)), d(dst, c.engine, out);
  dnnl::matmul(pd).execute(c.stream, {{DNNL_ARG_SRC, s}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, d}});
  c.stream.wait();
}

std::string bf16_matmul_isa() {
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
