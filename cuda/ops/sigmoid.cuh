// The logistic sigmoid in fp32 for the kernels that gate with it (SwiGLU, the shared expert's gate).
#pragma once

namespace upcycle::cuda {

// σ(x); far out expf overflows to inf and σ saturates to exactly 0 (or 1), never NaN.
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

}  // namespace upcycle::cuda
