// Warp and block reductions shared by the ops' kernels, each in a fixed order so a sum gives the
// same bits every run.
#pragma once

namespace upcycle::cuda {

inline constexpr unsigned kAllLanes = 0xffffffffu;

// Butterfly reductions: every lane ends with the same bits (a + b == b + a in IEEE), so values
// derived from them are warp-uniform.
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kAllLanes, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kAllLanes, v, o);
  return v;
}

// Σ v over the block in a fixed tree, valid in thread 0; every thread must call it, at most once
// per kernel (the shared slots are not reused).
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(kAllLanes, v, o);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
  __syncthreads();
  double s = 0;
  if (threadIdx.x == 0)
    for (unsigned w = 0; w < blockDim.x / 32; ++w) s += warp_sums[w];
  return s;
}

}  // namespace upcycle::cuda
