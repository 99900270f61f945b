// `upcycle sweep` as a function: the demo's experiment for every cell of a grid of training-data
// size x repeat x method x expert count (dense has none), resumable, with sweep.csv, plots and a
// report (report/sweep_report.hpp). Cells run one after another in one process, or one by one
// in processes of their own into one folder (a job array), then a report gathers them.
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

// One experiment of the grid: a method at an expert count (1 for dense) on one data size and
// repeat. Its folder is OUT/n{data}-r{repeat}/dense or OUT/n{data}-r{repeat}/e{experts}/{method};
// it is done when sweep_row.json, its row of sweep.csv, is there.
struct SweepCell {
  int64_t data;
  int repeat;
  std::string method;
  int experts;
  size_t row;  // its row of sweep.csv: the grid's order (data size, repeat, method, expert count)
};

// The grid's cells in the plan's order, in which `--cell I` is the I-th: first one cell per data
// size and repeat (its dense cell where dense is among the methods), which between them make
// every stage that cells share (the data, each repeat's base tuning, each dense run); then the
// others, which find those made. Each part keeps the grid's order, so the same options give the
// same indices.
std::vector<SweepCell> sweep_cells(const SweepOptions& o);
// How many cells come first: one per data size and repeat.
size_t sweep_first_cells(const SweepOptions& o);
// "80 samples, repeat 0, upit with 2 experts"
std::string cell_name(const SweepCell& c);

// Runs the cell into o.out unless it is done, then writes its sweep_row.json (temporary name,
// renamed when complete). Every stage that cells share, and the cell itself, runs under a lock
// beside its output (core/file_lock.hpp), so processes may run cells into one folder at once.
void run_sweep_cell(const SweepOptions& o, const SweepCell& cell);

// Writes sweep.csv, plots/ and report.md from the cells that are done (report.md says how many of
// the grid's cells it holds and names the missing ones); the plan indices of the missing ones.
// InputError naming o.out when no cell is done.
std::vector<size_t> report_sweep(const SweepOptions& o);

// Runs every cell in the plan's order (each skipped when done), then report_sweep.
void run_sweep(const SweepOptions& o);

}  // namespace upcycle
