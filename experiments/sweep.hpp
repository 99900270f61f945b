// `upcycle sweep` as a function: the demo's experiment for every cell of a grid of training-data
// size x repeat x method x expert count (dense has none), resumable, with sweep.csv, plots and a
// report (report/sweep_report.hpp).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "experiments/settings.hpp"

namespace upcycle {

struct SweepOptions {
  std::vector<int64_t> experts{2, 4, 8};         // expert counts of the MoE methods
  std::vector<int64_t> data{1000, 5000, 20000};  // training-data sizes (samples)
  std::vector<std::string> methods{"dense", "sparse", "upit"};
  int repeats = 1;                               // with seeds seed, seed + 1, ...
  std::filesystem::path out = "runs/sweep";
  int64_t base_samples = 4000;                   // the base tuning's own synthetic data
  double dense_epochs = 3, epochs = 3;           // the dense run's, each method's
  ExperimentSettings settings;
};

const OptionTable<SweepOptions>& sweep_option_table();
void check_sweep_options(const SweepOptions& o);

// Runs the cells that are missing into o.out and writes sweep.csv, plots/ and report.md.
void run_sweep(const SweepOptions& o);

}  // namespace upcycle
