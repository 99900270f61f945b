#include "trainer/selection_bias.hpp"

#include <stdexcept>

namespace upcycle {

void nudge_selection_bias(SelectionBias& bias, const std::vector<std::vector<int64_t>>& counts, double rate) {
  if (bias.size() != counts.size()) throw std::invalid_argument("selection bias: layers differ from the counts'");
  for (size_t l = 0; l < bias.size(); ++l) {
    if (bias[l].size() != counts[l].size()) throw std::invalid_argument("selection bias: experts differ from the counts'");
    int64_t total = 0;
    for (int64_t c : counts[l]) total += c;
    const double mean = double(total) / double(counts[l].size());
    for (size_t e = 0; e < bias[l].size(); ++e) {
      const double load = double(counts[l][e]);
      bias[l][e] += float(load < mean ? rate : load > mean ? -rate : 0.0);
    }
  }
}

}  // namespace upcycle
