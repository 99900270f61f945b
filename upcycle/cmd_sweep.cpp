// `upcycle sweep`: experiments over a grid of expert counts, training-data sizes and methods
// (experiments/sweep.hpp), in one process, or as a plan of one command line per cell for a job
// array (--plan, --cell I), gathered by --report.
#include <filesystem>
#include <iostream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "experiments/methods.hpp"
#include "experiments/sweep.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;

// "runs/sweep/" as "/home/me/runs/sweep": one spelling of each path.
fs::path absolute_path(const fs::path& path) {
  const fs::path p = fs::absolute(path).lexically_normal();
  return p.has_filename() ? p : p.parent_path();
}

// The command line of the sweep `o` with `mode` ("--cell 3", "--report") as one shell line: this
// executable and the options that differ from the defaults, --out (and --model) made absolute, so
// that the line runs the same from any folder and the same options give the same line.
std::string command_line(SweepOptions o, const std::string& mode) {
  o.out = absolute_path(o.out);
  if (o.settings.model) o.settings.model = absolute_path(*o.settings.model);
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  std::string line = cli::shell_quote(ec ? "upcycle" : self.string()) + " sweep";
  for (const std::string& word : cli::option_words(sweep_option_table(), o)) line += " " + cli::shell_quote(word);
  return line + " " + mode;
}

// A line per cell on stdout, in the plan's order (`wc -l` is the job array's size).
void print_plan(const SweepOptions& o) {
  const std::vector<SweepCell> cells = sweep_cells(o);
  for (size_t i = 0; i < cells.size(); ++i) std::cout << command_line(o, fmt::format("--cell {}", i)) << "\n";
  spdlog::info("{} cells, 0 to {}; cells 0 to {} make the stages the others share (data, base tunings, dense runs). "
               "When they are done: {}",
               cells.size(), cells.size() - 1, sweep_first_cells(o) - 1, command_line(o, "--report"));
}

void run_cell(const SweepOptions& o, int64_t index) {
  const std::vector<SweepCell> cells = sweep_cells(o);
  if (index < 0 || index >= int64_t(cells.size()))
    throw InputError(o.out, fmt::format("--cell {} is out of range: this grid has {} cells, 0 to {} (--plan lists them)", index,
                                        cells.size(), cells.size() - 1));
  run_sweep_cell(o, cells[size_t(index)]);
}

void report(const SweepOptions& o) {
  const std::vector<size_t> missing = report_sweep(o);
  const std::vector<SweepCell> cells = sweep_cells(o);
  std::vector<std::string> names;
  for (size_t i : missing) names.push_back(fmt::format("cell {} ({})", i, cell_name(cells[i])));
  if (!missing.empty())
    spdlog::warn("{} of {} cells are not done, so not in the report: {}", missing.size(), cells.size(), fmt::join(names, "; "));
  spdlog::info("report of {} of {} cells: {}", cells.size() - missing.size(), cells.size(), (o.out / "report.md").string());
}

}  // namespace

int cmd_sweep(const Args& args) {
  cli::Spec spec;
  spec.usage =
      "upcycle sweep [--experts 2,4,8] [--data 1000,5000,20000] [--methods dense,sparse,upit] [--repeats R] [--out DIR]\n"
      "              [--plan | --cell I | --report]";
  spec.summary =
      "Runs the demo's experiment (a base tuning per repeat on data of its own, standing in for\n"
      "pretraining; a dense run saving checkpoints; then each method tuned on the same\n"
      "data and evaluated) for every cell of a grid: training-data size x repeat x method x expert\n"
      "count (dense has none). Data of each size and repeat comes from `upcycle data synth` (seed +\n"
      "repeat); the test set is shared. The dense run of a data size and repeat is shared by its\n"
      "cells. Tuning is by epochs, so more data is more steps. Writes DIR/sweep.csv (a row per\n"
      "cell), DIR/summary.csv (means with 95% t intervals over repeats), DIR/pairs.csv (paired\n"
      "differences of methods on the same seeds), DIR/plots/ and DIR/report.md. Finished cells\n"
      "are skipped when run again, so an interrupted sweep continues.\n\n"
      "To run cells in processes of their own (a Slurm job array, GNU parallel, several machines\n"
      "sharing DIR): --plan prints on stdout one command line per cell (`... --cell I`, I from 0;\n"
      "`wc -l` counts them), the cells that make the shared stages first; each runs its cell and\n"
      "writes its row to the cell's sweep_row.json; --report then writes the report from the cells\n"
      "that are done and names the missing ones. Every shared stage and every cell runs under a\n"
      "lock file beside its output, so cells may run at once in any order. Give each process its\n"
      "share of the cores (OMP_NUM_THREADS).\n\n"
      "Methods (--methods), the baselines and UpIT's ablations:\n" +
      experiment_methods_help();
  cli::add_options(spec, sweep_option_table());
  spec.options.add_options()
      ("plan", "print the grid's cells as command lines, one per line (stdout), and stop")
      ("cell", cli::po::value<int64_t>(), "run cell I of --plan's list alone (no report)")
      ("report", "write the report from the cells that are done, naming the missing ones");
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  SweepOptions o;
  cli::read_options(*vm, sweep_option_table(), o, check_sweep_options);
  if (vm->count("plan") + vm->count("cell") + vm->count("report") > 1) throw UsageError("give one of --plan, --cell and --report");
  if (vm->count("plan")) print_plan(o);
  else if (vm->count("cell")) run_cell(o, (*vm)["cell"].as<int64_t>());
  else if (vm->count("report")) report(o);
  else run_sweep(o);
  return 0;
}

}  // namespace upcycle
