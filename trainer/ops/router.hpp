// The MoE router: softmax over the experts, the top k kept, their probabilities renormalised to
// sum to 1 (Mixtral's convention, the qwen MoEs' norm_topk_prob) or used as they are (the qwen
// MoEs' default).
#pragma once
#include <cstdint>
#include <type_traits>

namespace upcycle::ops {

// forward:  probs[N,E] = softmax(logits[N,E]) (sum in double)
//           idx[N,k]   = the k experts of highest probs[n,e] + bias[e], highest first (ties:
//                        lower index); bias [E] may be null (0): auxiliary-loss-free balancing
//                        (DeepSeek-V3) shifts the selection only, never the weights
//           w[N,k]     = probs[n, idx[n,j]] / Σ_j' probs[n, idx[n,j']]   (renormalise)
//                        probs[n, idx[n,j]]                              (otherwise)
// backward: the selection is piecewise constant. Renormalised, w is exactly the softmax of the
//           selected logits alone, so only those get a gradient:
//           d_logits[n, idx[n,j]] += w[n,j] · (d_w[n,j] − Σ_j' d_w[n,j'] · w[n,j'])
//           otherwise every logit does, through the softmax over all E:
//           d_logits[n, e] += probs[n,e] · ([e = idx[n,j]] d_w[n,j] − Σ_j' d_w[n,j'] · w[n,j'])
template <class T>
void router_forward(int32_t* idx, T* w, T* probs, const T* logits, const std::type_identity_t<T>* bias, int64_t N, int64_t E,
                    int64_t k, bool renormalise);
template <class T>
void router_backward(T* d_logits, const T* d_w, const T* w, const T* probs, const int32_t* idx, int64_t N, int64_t E,
                     int64_t k, bool renormalise);

}  // namespace upcycle::ops
