#include "trainer/collapse_watch.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

namespace upcycle {

bool CollapseWatch::observe(int64_t step, const std::vector<std::vector<int64_t>>& tokens) {
  if (warned_) return false;
  run_.resize(tokens.size(), 0);
  for (size_t l = 0; l < tokens.size(); ++l) {
    int64_t total = 0;
    for (int64_t c : tokens[l]) total += c;
    if (tokens[l].empty() || total == 0) continue;
    const double even = double(total) / double(tokens[l].size());
    const double share = double(*std::min_element(tokens[l].begin(), tokens[l].end())) / even;
    run_[l] = share < kShare ? run_[l] + 1 : 0;
    if (run_[l] < kSteps) continue;
    spdlog::warn("step {}: layer {}'s idlest expert has had under {} of an even share of the routed tokens for {} "
                 "steps ({:.3f} now): its router is collapsing onto a few experts (--aux-loss per-layer, or a larger "
                 "--aux-loss-coef, balances it)",
                 step, l, kShare, kSteps, share);
    warned_ = true;
    return true;
  }
  return false;
}

}  // namespace upcycle
