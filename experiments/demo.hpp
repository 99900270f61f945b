// `upcycle demo` as a function: UpIT end to end on synthetic instruction data against sparse
// upcycling and the dense model at equal data and steps, with a report (report/).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "experiments/settings.hpp"

namespace upcycle {

struct DemoOptions {
  std::filesystem::path out = "runs/demo";
  int experts = 8;               // of the MoEs
  int64_t train_samples = 4000;  // synthetic training samples
  int64_t dense_steps = 250;     // the dense run's
  int64_t steps = 300;           // each method's tuning
  std::vector<std::string> methods{"dense", "sparse", "upit"};  // names in experiment_methods()
  int repeats = 3;               // seeds seed, seed + 1, ...: each its own dense run and methods
  bool overwrite = false;        // remove out first
  ExperimentSettings settings;
};

const OptionTable<DemoOptions>& demo_option_table();
void check_demo_options(const DemoOptions& o);

// Runs what is missing into o.out (data/, init/, base/ shared; r0/, r1/, ... each with dense-run/
// and a folder per method) and writes report.md, metrics.csv, summary.csv, pairs.csv and plots/.
void run_demo(const DemoOptions& o);

}  // namespace upcycle
