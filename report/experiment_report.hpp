// What an experiment leaves for people: report.md (the results over repeats with their intervals,
// and what they show, in words), metrics.csv (a row per repeat and method), summary.csv and
// pairs.csv (report/repeats.hpp), and plots (SVG) of the first repeat: loss curves per method,
// each MoE's expert load per layer, and UpIT's expert distances before and after the expansion.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "report/repeats.hpp"

namespace upcycle {

struct ExperimentReport {
  std::string title;                  // "upcycle demo"
  std::string setup;                  // markdown: the model, data, steps, seeds
  std::vector<RepeatRow> rows;        // every method in every repeat
  std::filesystem::path base_dir;     // the base tuning before the repeats, if any (empty: none)
  std::filesystem::path dense_dir;    // the first repeat's dense run (its loss curve is plotted)
  double base_seconds = 0, dense_seconds = 0;  // the base's wall time, the dense runs' total (0: unknown)
};

// The mean expert load [L][E] (shares of routed slots) over the last tenth of a tuning run's
// steps, from its metrics.jsonl; empty for a dense run.
std::vector<std::vector<double>> final_expert_load(const std::filesystem::path& metrics);

// Writes dir/report.md, dir/metrics.csv, dir/summary.csv, dir/pairs.csv and dir/plots/*.svg,
// each complete or not at all.
void write_experiment_report(const std::filesystem::path& dir, const ExperimentReport& r);

}  // namespace upcycle
