// Storage to arithmetic and back, for the kernels of every op: T is float or bf16, arithmetic
// is fp32, and a bf16 result is rounded to nearest even.
#pragma once
#include <type_traits>

#include "cuda/runtime.hpp"

namespace upcycle::cuda {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
template <class T>
__device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same_v<T, bf16>)
    return __float2bfloat16_rn(x);
  else
    return x;
}

}  // namespace upcycle::cuda
