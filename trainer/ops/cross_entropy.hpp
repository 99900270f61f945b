// Cross-entropy of the next token, fused with the softmax over the vocabulary. Rows are streamed
// one at a time: nothing of size [N,V] is allocated.
#pragma once
#include <cstdint>

namespace upcycle::ops {

inline constexpr int32_t kIgnoreIndex = -100;  // targets that do not count (prompt, padding)

struct CrossEntropyLoss {
  double mean = 0;    // over the counted tokens; 0 when none counts
  int64_t count = 0;  // tokens whose target is not kIgnoreIndex
};

// forward:  lse[n] = logsumexp_v logits[n,v]              [N], kept for backward
//           loss   = mean over counted n of lse[n] − logits[n, targets[n]]   (summed in double)
// backward: d_logits[n,:] = (softmax(logits[n,:]) − onehot(targets[n])) · d_loss / count,
//           rows with an ignored target get zeros. `count` is the normaliser: the forward's
//           count, or the whole step's when micro-batches are accumulated.
// Unlike every other backward this one WRITES d_logits, and d_logits may be logits itself: the
// logits feed nothing but the loss, and overwriting them in place saves an [N,V] buffer.
template <class T>
CrossEntropyLoss cross_entropy_forward(T* lse, const T* logits, const int32_t* targets, int64_t N, int64_t V);
template <class T>
void cross_entropy_backward(T* d_logits, const T* logits, const T* lse, const int32_t* targets, int64_t N, int64_t V,
                            int64_t count, double d_loss);

}  // namespace upcycle::ops
