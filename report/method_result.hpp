// One method's results in an experiment: what the experiments produce and the reports read.
#pragma once
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace upcycle {

struct MethodResult {
  std::string method;
  int experts = 1;                       // 1 for dense
  int64_t total_params = 0, active_params = 0;
  double loss = 0, ppl = 0;              // on the test data's replies
  // The test loss of the model the tuning starts from (the converted MoE; dense: the dense run's
  // final model), NaN when unknown.
  double start_loss = std::numeric_limits<double>::quiet_NaN();
  double exact = 0;                      // exact-match accuracy
  int64_t exact_total = 0;               // over this many samples
  std::map<std::string, double> heldout_exact;  // by held-out set name
  std::map<std::string, double> exact_by_task;
  std::vector<double> exact_by_sample;   // 1 or 0 per test sample, in file order (empty: unknown)
  double seconds = 0;                    // wall time of its own stages (convert, tune, eval)
  std::filesystem::path dir;             // its folder: init/ (MoE), tuned/, eval-*.json
};

// Which side of a comparison a method takes (a − b with a ranked first): UpIT first, dense last,
// UpIT's ablations and the other baselines between, sparse upcycling last of them.
inline int pair_rank(const std::string& method) {
  return method == "upit" ? 0 : method == "dense" ? 3 : method == "sparse" ? 2 : 1;
}

}  // namespace upcycle
