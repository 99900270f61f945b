// The optimizer on the GPU (trainer/ops/adamw.hpp): AdamW fused in one kernel on the fp32
// master weights, writing their bf16 copy in the same pass; the global gradient norm.
#pragma once
#include <cstdint>

#include "cuda/runtime.hpp"
#include "trainer/ops/adamw.hpp"

namespace upcycle::cuda {

// The CPU's update on n elements at step t >= 1; when `copy` is not null it receives the new
// param rounded to T (the weights the next forward reads).
template <class T>
void adamw_step(float* param, T* copy, const float* grad, float* m, float* v, int64_t n, const ops::AdamWConfig& config,
                int64_t t, bool decay, cudaStream_t stream = nullptr);

// sqrt(Σ over the tensors of Σ x²), accumulated in double in a fixed order (the same bits every
// run); tensors[i] has sizes[i] elements. Host arrays of device pointers; waits for the result.
double global_norm(const float* const* tensors, const int64_t* sizes, int64_t count, cudaStream_t stream = nullptr);
// As ops::clip_global_norm: when the norm exceeds max_norm, scales every tensor by
// max_norm / (norm + 1e-6); returns the norm before clipping.
double clip_global_norm(float* const* tensors, const int64_t* sizes, int64_t count, double max_norm,
                        cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
