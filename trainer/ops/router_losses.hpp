// The router's auxiliary losses: Switch-style load balancing (as transformers' Mixtral
// load_balancing_loss_func), the router z-loss (ST-MoE) and UpIT's router pre-optimisation
// BCE. Each returns the loss in double and puts its gradient on the router logits.
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
// Global-batch balancing (Qwen3-MoE): counts [E] and counted_tokens, the slots per expert and the
// tokens of the whole step (every micro-batch), give f[e] = counts[e] / counted_tokens in place
// of this batch's own; P stays this batch's. Null counts: this batch's f.
template <class T>
double load_balancing_loss_forward(const T* probs, const int32_t* idx, int64_t N, int64_t E, int64_t k, double coef,
                                   const int64_t* counts = nullptr, int64_t counted_tokens = 0);
template <class T>
void load_balancing_loss_backward(T* d_logits, const T* probs, const int32_t* idx, int64_t N, int64_t E, int64_t k,
                                  double coef, double d_loss, const int64_t* counts = nullptr, int64_t counted_tokens = 0);

// forward:  z[n] = logsumexp_e logits[n,e],  loss = coef · mean_n z[n]²
// backward: d_logits[n,e] += d_loss · coef · 2·z[n]/N · softmax(logits[n])[e]
template <class T>
double router_z_loss_forward(const T* logits, int64_t N, int64_t E, double coef);
template <class T>
void router_z_loss_backward(T* d_logits, const T* logits, int64_t N, int64_t E, double coef, double d_loss);

// UpIT's router pre-optimisation (stage 3): every sample of the seed data was given to the
// expert whose own dense model scores it best; the BCE pushes sigmoid(logit e) toward 1 on that
// expert's tokens and toward 0 on every other expert's, each expert an independent binary label.
// targets[N]: the expert each token's sample was assigned to, or -1 (not counted).
// forward:  loss = coef · (1 / (M·E)) Σ_{n: targets[n] >= 0} Σ_e BCE(sigmoid(logits[n,e]), [e == targets[n]])
//           with M the number of counted tokens (none counted: loss 0), each term computed
//           stably from the logit as softplus(z) − y·z.
// backward: d_logits[n,e] += d_loss · coef · (sigmoid(z) − y) / (M·E) on counted tokens.
// For a whole model pass every layer's rows at once (N = layers·tokens, the token targets
// repeated for each layer), as for the losses above: the mean is then over layers too, so the
// loss's scale does not grow with depth. A target outside [-1, E): std::invalid_argument.
template <class T>
double router_bce_loss_forward(const T* logits, const int32_t* targets, int64_t N, int64_t E, double coef);
template <class T>
void router_bce_loss_backward(T* d_logits, const T* logits, const int32_t* targets, int64_t N, int64_t E, double coef,
                              double d_loss);

}  // namespace upcycle::ops
