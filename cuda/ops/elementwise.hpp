// Small element-wise ops the model needs between the others: residual adds, casts between the
// fp32 master weights and their bf16 copies, scaling.
// Conventions of every op in cuda/ops: pointers are device memory; T is the storage type
// (float or bf16) and arithmetic is fp32; small per-row statistics (rstd, lse, router
// probabilities and weights) are fp32 whatever T is, and so are weight gradients. Each op
// mirrors its CPU reference in trainer/ops (same arguments, same "adds into" or "writes"
// rule) and runs on `stream` without synchronising, unless it returns a host value.
#pragma once
#include <cstdint>

#include "cuda/runtime.hpp"

namespace upcycle::cuda {

// a[i] += b[i], i < n
template <class T>
void add_into(T* a, const T* b, int64_t n, cudaStream_t stream = nullptr);
// out[i] = To(in[i]) (rounded to nearest even for bf16), i < n
template <class To, class From>
void cast(To* out, const From* in, int64_t n, cudaStream_t stream = nullptr);
// x[i] *= scale, i < n
void scale(float* x, float scale, int64_t n, cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
