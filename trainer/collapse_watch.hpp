// Watching an MoE's routing during tuning: a warning, once per run, when some layer's idlest
// expert gets under a tenth of an even share of the routed tokens for 50 steps in a row (a
// router collapsing onto a few experts, so that the others stop training).
#pragma once
#include <cstdint>
#include <vector>

namespace upcycle {

class CollapseWatch {
 public:
  static constexpr double kShare = 0.1;  // of an even share
  static constexpr int64_t kSteps = 50;

  // tokens[L][E]: the step's routed slots per layer and expert. True (and a warning logged) the
  // first time a layer has been under kShare for kSteps steps in a row; false otherwise.
  bool observe(int64_t step, const std::vector<std::vector<int64_t>>& tokens);

 private:
  std::vector<int64_t> run_;  // per layer: steps in a row under kShare
  bool warned_ = false;
};

}  // namespace upcycle
