#include "router/seed_data.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace upcycle::router {

TokenizedData draw_seed_data(const TokenizedData& data, double fraction, int64_t min_samples, uint64_t seed) {
  if (!(fraction > 0 && fraction <= 1) || min_samples < 1)
    throw std::invalid_argument("draw_seed_data: 0 < fraction <= 1 and min_samples >= 1");
  const double n = double(data.samples.size());
  const double wanted = std::max(fraction * n, double(min_samples));
  if (wanted >= n) return data;
  TokenizedData rest = data;
  return split_off(rest, wanted / n, seed);
}

}  // namespace upcycle::router
