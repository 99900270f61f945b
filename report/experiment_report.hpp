// What an experiment leaves for people: report.md (the results table and what it shows, in
// words), metrics.csv, and plots (SVG): loss curves per method, each MoE's expert load per layer,
// and UpIT's expert distances before and after the genetic expansion.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "report/method_result.hpp"

namespace upcycle {

struct ExperimentReport {
  std::string title;                  // "upcycle demo"
  std::string setup;                  // markdown: the model, data, steps, seeds
  std::vector<MethodResult> results;  // one per method
  std::filesystem::path base_dir;     // the base tuning before it, if any (empty: none)
  std::filesystem::path dense_dir;    // the shared dense run
  double base_seconds = 0, dense_seconds = 0;  // their wall times (0: unknown)
};

// The mean expert load [L][E] (shares of routed slots) over the last tenth of a tuning run's
// steps, from its metrics.jsonl; empty for a dense run.
std::vector<std::vector<double>> final_expert_load(const std::filesystem::path& metrics);

// The held-out sets any result was evaluated on, by name.
std::vector<std::string> heldout_names(const std::vector<MethodResult>& results);

// Words on what the results show: the methods by exact match and by loss, each pair's difference
// in exact match with its paired-bootstrap interval over the test samples (a claim only where the
// interval excludes 0), where each tuning starts and ends, and how balanced each MoE's experts are.
std::string findings(const ExperimentReport& r);

// Writes dir/report.md, dir/metrics.csv and dir/plots/*.svg, each complete or not at all.
void write_experiment_report(const std::filesystem::path& dir, const ExperimentReport& r);

}  // namespace upcycle
