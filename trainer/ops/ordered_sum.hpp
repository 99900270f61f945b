// Sums whose rounding does not depend on the thread count or on which thread finishes first
// (an OpenMP reduction combines partials in no fixed order): the terms are summed in fixed
// blocks in parallel, then the block sums in order. Reproducible runs need this wherever a sum
// feeds the weights (the gradient norm that scales clipped gradients) or a logged figure.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace upcycle::ops {

// Σ_{i<n} term(i), in double, in blocks of `block` terms (1 for heavy terms, such as a row's
// logsumexp over a vocabulary, so that every row can go to its own thread).
template <class Term>
double ordered_sum(int64_t n, const Term& term, int64_t block = 1024) {
  const int64_t blocks = (n + block - 1) / block;
  std::vector<double> partial(size_t(blocks), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    double s = 0;
    for (int64_t i = b * block; i < std::min(n, (b + 1) * block); ++i) s += term(i);
    partial[size_t(b)] = s;
  }
  double sum = 0;
  for (double s : partial) sum += s;
  return sum;
}

}  // namespace upcycle::ops
