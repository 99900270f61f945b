// Matrix products on oneDNN's matmul, which picks its kernels from the CPU's features at run time
// (AMX, AVX512-BF16, AVX-512, AVX2): the bf16 products of ops::bf16_matmul, and the f32 products
// of ops::matmul where oneDNN has AVX-512 kernels here (f32_products_on_onednn). oneDNN's kernels
// are deterministic for a fixed ISA and thread count. Call outside OpenMP parallel regions.
#pragma once
#include <cstdint>
#include <string>

namespace upcycle::ops {

enum class ProductType { F32, BF16 };  // what a and b hold (f32, or bf16 bits as uint16_t); out is f32
// How b holds B [K,M]: Plain, row major [K,M]; Transposed, row major [M,K] (a weight as nn.Linear
// stores it, read in place).
enum class BLayout { Plain, Transposed };

// out[N,M] (+)= a[N,K] · B[K,M]: out's rows out_stride apart; a's element (n, k) at
// a[n·a_row_stride + k·a_col_stride] (a row-major matrix, or a transposed one read in place).
void onednn_product(float* out, int64_t out_stride, const void* a, int64_t a_row_stride, int64_t a_col_stride,
                    const void* b, BLayout b_layout, ProductType type, int64_t N, int64_t K, int64_t M,
                    bool accumulate);

// While one lives (on this thread), products run on primitives made for any shape: for callers
// whose row counts change from call to call (an MoE's experts), where a primitive made for each
// shape would be compiled anew for most calls.
class VaryingRows {
 public:
  VaryingRows();
  ~VaryingRows();
  VaryingRows(const VaryingRows&) = delete;
  VaryingRows& operator=(const VaryingRows&) = delete;
  static bool active();
};

// oneDNN's ISA here: "avx512_core_amx", "avx512_core_bf16", "avx512_core", "avx2", ...
std::string onednn_isa();
// Whether it has bf16 dot products or AMX tiles here.
bool onednn_native_bf16();
// Whether f32 products run here on oneDNN (its ISA has AVX-512) rather than OpenBLAS: oneDNN
// chooses its kernels by the CPU's features, where an OpenBLAS that does not know the CPU model,
// or an OPENBLAS_CORETYPE set for an older one, runs older kernels. Measured on a 2-core AMD EPYC
// (Zen 5) whose OpenBLAS ran its Haswell (AVX2) kernels: 1.6-2.0x OpenBLAS on every shape of the
// SmolLM2 model's products; on a Xeon with AMX (OpenBLAS on its own AVX-512 kernels) 1.01-1.4x.
bool f32_products_on_onednn();

}  // namespace upcycle::ops
