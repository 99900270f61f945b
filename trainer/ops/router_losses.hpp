// The router's auxiliary losses: Switch-style load balancing (as transformers' Mixtral
// load_balancing_loss_func) and the router z-loss (ST-MoE). Both return the loss in double
// and put their gradient on the router logits.
#pragma once
#include <cstdint>

namespace upcycle::ops {

// probs[N,E] and idx[N,k] as router_forward gives them.
// forward:  f[e] = (number of slots j with idx[n,j] = e) / N   (the [N,k,E] one-hot averaged over
//           tokens, then summed over k), P[e] = mean_n probs[n,e]
//           loss = coef · E · Σ_e f[e]·P[e]                       (balanced routing gives coef·k)
// backward: through P only (f counts selections, piecewise constant):
//           g[e] = d_loss · coef · E · f[e] / N  on probs[n,e], then through the softmax,
//           d_logits[n,e] += probs[n,e] · (g[e] − Σ_e' g[e']·probs[n,e'])
// transformers concatenates every layer's logits before averaging; passing all layers' rows at
// once (N = layers·tokens) gives exactly its value.
template <class T>
double load_balancing_loss_forward(const T* probs, const int32_t* idx, int64_t N, int64_t E, int64_t k, double coef);
template <class T>
void load_balancing_loss_backward(T* d_logits, const T* probs, const int32_t* idx, int64_t N, int64_t E, int64_t k,
                                  double coef, double d_loss);

// forward:  z[n] = logsumexp_e logits[n,e],  loss = coef · mean_n z[n]²
// backward: d_logits[n,e] += d_loss · coef · 2·z[n]/N · softmax(logits[n])[e]
template <class T>
double router_z_loss_forward(const T* logits, int64_t N, int64_t E, double coef);
template <class T>
void router_z_loss_backward(T* d_logits, const T* logits, int64_t N, int64_t E, double coef, double d_loss);

}  // namespace upcycle::ops
