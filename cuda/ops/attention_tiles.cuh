// What the attention kernels share (attention.cu, attention_backward.cu, attention_cached.cu):
// the tile sizes per head dim, rows loaded into shared memory, the
// register-tiled product of two shared-memory tiles, the visibility rule, and the host-side
// checks and head-dim dispatch.
#pragma once
#include <cuda_bf16.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "cuda/ops/attention.hpp"
#include "cuda/ops/convert.cuh"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda::attn {

// The tiled kernels run 256 threads, seen as a 16 × 16 grid: tx = thread % 16, ty = thread / 16.
constexpr int kThreads = 256, kSide = 16;

// Query rows Bq and key rows Bk of a tile (multiples of 16) per head dim D: the largest that keep
// the backward's shared memory (Q, dO, K, V and the P, dS tiles, in fp32) under the A100's
// 163 KB per block. Rows of a D-wide tile are LD = D + 1 floats apart, and rows of a Bq × Bk
// score tile LS = Bk + 1: both odd, so the 16 rows a warp reads in one column fall in 16 banks.
template <int D>
struct Tiles {
  static constexpr int Bq = D <= 128 ? 64 : 32;
  static constexpr int Bk = D <= 96 ? 64 : 32;
  static constexpr int LD = D + 1, LS = Bk + 1;
  // attention.cu: Q, K, V, S and a factor per query row.
  static constexpr size_t forward_smem = sizeof(float) * ((Bq + 2 * Bk) * LD + Bq * LS + Bq);
  // attention_backward.cu: Q, dO, K, V, P, dS, and lse and delta per query row.
  static constexpr size_t backward_smem = sizeof(float) * (2 * (Bq + Bk) * LD + 2 * Bq * LS + 2 * Bq);
  static_assert(Bq % kSide == 0 && Bk % kSide == 0 && D % kSide == 0 && kThreads % Bq == 0);
  static_assert(forward_smem <= 163 * 1024 && backward_smem <= 163 * 1024);
};

// dst [rows][D + 1] ← rows r0 .. r0 + rows − 1 of head `head` of a [N, n_heads, D] tensor, in
// fp32; rows at or past r_end are zeros (masked scores then multiply zeros, never stale values
// that could be NaN).
template <int D, class T>
__device__ void load_rows(float* dst, const T* src, int r0, int rows, int r_end, int n_heads, int head) {
  for (int idx = threadIdx.x; idx < rows * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    dst[r * (D + 1) + d] = r0 + r < r_end ? to_float(src[(int64_t(r0 + r) * n_heads + head) * D + d]) : 0.f;
  }
}

// c[i][j] += Σ_{k<K} A(ty + 16i, k) · B(k, tx + 16j) with A(m, k) = a[m·am + k·ak] and
// B(k, n) = b[k·bk + n·bn]: the strides let one routine read a tile or its transpose. A warp
// reads 2 addresses of A per k (broadcasts) and 16 of B (16 banks when the stride is 1 or odd).
template <int am, int ak, int bk, int bn, int K, int M, int N>
__device__ __forceinline__ void tile_product(float (&c)[M][N], const float* a, const float* b) {
  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;
#pragma unroll 4
  for (int k = 0; k < K; ++k) {
    float av[M], bv[N];
#pragma unroll
    for (int i = 0; i < M; ++i) av[i] = a[(ty + kSide * i) * am + k * ak];
#pragma unroll
    for (int j = 0; j < N; ++j) bv[j] = b[k * bk + (tx + kSide * j) * bn];
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int j = 0; j < N; ++j) c[i][j] = fmaf(av[i], bv[j], c[i][j]);
  }
}

// Whether query i sees key j of its own sequence (j at or after the sequence's start): causal,
// and inside the window (0: none).
__device__ __forceinline__ bool sees(int i, int j, int window) { return j <= i && (window == 0 || i - j < window); }

// ---- host side ----

constexpr bool supported_head_dim(int64_t D) {
  return D == 32 || D == 64 || D == 80 || D == 96 || D == 128 || D == 256;
}

// The checks of the CPU op that need no copy of cu_seqlens (its contents are the caller's to get
// right: a sequence longer than max_seqlen would be left partly uncomputed), plus the grid's
// limits. Returns whether there is anything to compute.
inline bool check_shape(const char* op, int64_t n_seqs, int64_t max_seqlen, const ops::AttentionShape& s) {
  using ops::require_arg;
  require_arg(s.heads > 0 && s.kv_heads > 0 && s.heads % s.kv_heads == 0, op, "kv_heads must divide heads");
  require_arg(supported_head_dim(s.head_dim), op, "head_dim must be 32, 64, 80, 96, 128 or 256");
  require_arg(s.window >= 0 && s.tokens >= 0 && n_seqs >= 0 && max_seqlen >= 0, op, "bad sizes");
  require_arg(max_seqlen <= s.tokens && (s.tokens == 0 || (n_seqs > 0 && max_seqlen > 0)), op,
              "max_seqlen must be the longest sequence's length");
  require_arg(s.tokens <= INT_MAX && n_seqs <= INT_MAX && s.heads <= 65535, op,
              "too many tokens, sequences or heads for the grid");
  return s.tokens > 0;
}

// The window as the kernels take it, an int: 0 where it masks nothing (W >= N, since i − j < N).
inline int kernel_window(const ops::AttentionShape& s) { return s.window >= s.tokens ? 0 : int(s.window); }

// blockIdx.x covers tiles × sequences; it must stay an int.
inline unsigned tile_blocks(const char* op, int64_t max_seqlen, int rows, int64_t n_seqs) {
  const int64_t blocks = (max_seqlen + rows - 1) / rows * n_seqs;
  ops::require_arg(blocks <= INT_MAX, op, "too many tiles for the grid");
  return unsigned(blocks);
}

// Lets a kernel use more than the default 48 KB of dynamic shared memory.
template <class Kernel>
void allow_smem(Kernel* kernel, size_t bytes) {
  UPCYCLE_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

// f(std::integral_constant<int, D>{}) for the supported head dims.
template <class F>
void with_head_dim(const char* op, int64_t D, F&& f) {
  switch (D) {
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    case 80: return f(std::integral_constant<int, 80>{});
    case 96: return f(std::integral_constant<int, 96>{});
    case 128: return f(std::integral_constant<int, 128>{});
    case 256: return f(std::integral_constant<int, 256>{});
    default: ops::require_arg(false, op, "head_dim must be 32, 64, 80, 96, 128 or 256");
  }
}

}  // namespace upcycle::cuda::attn
