// Next-token cross-entropy fused with the softmax over the vocabulary, on the GPU
// (trainer/ops/cross_entropy.hpp): one block per row, the row read once for its logsumexp and
// once more for the gradient.
#pragma once
#include <cstdint>

#include "cuda/runtime.hpp"
#include "trainer/ops/cross_entropy.hpp"

namespace upcycle::cuda {

// forward:  lse[n] (fp32) = logsumexp_v logits[n,v]; returns the mean over counted rows of
//           lse − logits[n, target] (summed in double in a fixed order) and their count; waits
//           for the result.
// backward: WRITES d_logits = (softmax − onehot) · d_loss / count, zero rows for ignored
//           targets; d_logits may be logits itself.
// A target outside [0, V) other than kIgnoreIndex: counted on the device, and the forward throws
// std::invalid_argument as the CPU op does (once it has waited, lse already written); the
// backward, which does not wait, gives its row zeros (the caller checks targets beforehand).
template <class T>
ops::CrossEntropyLoss cross_entropy_forward(float* lse, const T* logits, const int32_t* targets, int64_t N, int64_t V,
                                            cudaStream_t stream = nullptr);
template <class T>
void cross_entropy_backward(T* d_logits, const T* logits, const float* lse, const int32_t* targets, int64_t N,
                            int64_t V, int64_t count, double d_loss, cudaStream_t stream = nullptr);

}  // namespace upcycle::cuda
