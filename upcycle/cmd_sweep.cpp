// `upcycle sweep`: experiments over a grid of expert counts, training-data sizes and methods,
// each cell through the demo's pipeline, resumable, with sweep.csv, plots and a report.
#include <algorithm>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "core/progress.hpp"
#include "report/sweep_report.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"
#include "experiments/experiment.hpp"
#include "experiments/stages.hpp"
#include "upcycle/experiment_cli.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// "2,4,8" → {2, 4, 8}: positive integers, UsageError naming the option otherwise.
std::vector<int64_t> int_list(const std::string& text, const std::string& option) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 1) throw UsageError("--" + option + ": '" + item + "' is not a positive integer");
    out.push_back(v);
  }
  if (out.empty()) throw UsageError("--" + option + " needs at least one value");
  return out;
}

std::vector<std::string> method_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string m; std::getline(in, m, ',');) {
    if (m != "dense" && m != "sparse" && m != "upit" && m != "btx" && m != "drop")
      throw UsageError("--methods: unknown method '" + m + "' (dense, sparse, upit, btx, drop)");
    out.push_back(m);
  }
  if (out.empty()) throw UsageError("--methods needs at least one method");
  return out;
}

// One experiment of the grid: a method at an expert count (1 for dense) on one data size and repeat.
struct Cell {
  int64_t data;
  int repeat;
  std::string method;
  int experts;
};

std::vector<Cell> grid(const std::vector<int64_t>& sizes, int repeats, const std::vector<std::string>& methods,
                       const std::vector<int64_t>& experts) {
  std::vector<Cell> cells;
  for (int64_t n : sizes)
    for (int r = 0; r < repeats; ++r)
      for (const std::string& m : methods) {
        if (m == "dense") {
          cells.push_back({n, r, m, 1});
          continue;
        }
        for (int64_t e : experts) cells.push_back({n, r, m, int(e)});
      }
  return cells;
}

}  // namespace

int cmd_sweep(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle sweep [--experts 2,4,8] [--data 1000,5000,20000] [--methods dense,sparse,upit] [--repeats R] [--out DIR]";
  spec.summary =
      "Runs the demo's experiment (a base tuning per repeat on data of its own, standing in for\n"
      "pretraining; a dense run saving checkpoints; then each method tuned on the same\n"
      "data and evaluated) for every cell of a grid: training-data size x repeat x method x expert\n"
      "count (dense has none). Data of each size and repeat comes from `upcycle data synth` (seed +\n"
      "repeat); the test set is shared. The dense run of a data size and repeat is shared by its\n"
      "cells. Tuning is by epochs, so more data is more steps. Writes DIR/sweep.csv, DIR/plots/\n"
      "(exact match and loss against data size per method and expert count) and DIR/report.md.\n"
      "Finished cells are skipped when run again, so an interrupted sweep continues.";
  spec.options.add_options()
      ("experts", cli::po::value<std::string>()->default_value("2,4,8"), "expert counts of the MoE methods")
      ("data", cli::po::value<std::string>()->default_value("1000,5000,20000"), "training-data sizes (samples)")
      ("methods", cli::po::value<std::string>()->default_value("dense,sparse,upit"), "dense, sparse, upit, btx, drop")
      ("repeats", cli::po::value<int>()->default_value(1), "repeats of every cell with seeds seed, seed + 1, ...")
      ("out", cli::po::value<std::string>()->default_value("runs/sweep"), "output folder")
      ("base-samples", cli::po::value<int64_t>()->default_value(4000), "the base tuning's own synthetic data (other samples than the cells')")
      ("dense-epochs", cli::po::value<double>()->default_value(3.0), "epochs of the dense run")
      ("epochs", cli::po::value<double>()->default_value(3.0), "epochs of each method's tuning");
  add_experiment_options(spec.options);
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  const auto experts = int_list((*vm)["experts"].as<std::string>(), "experts");
  const auto sizes = int_list((*vm)["data"].as<std::string>(), "data");
  const auto methods = method_list((*vm)["methods"].as<std::string>());
  const int repeats = (*vm)["repeats"].as<int>();
  if (repeats < 1) throw UsageError("--repeats must be positive");
  check_experiment_options(*vm);
  const int top_k = (*vm)["top-k"].as<int>();
  if (top_k > *std::min_element(experts.begin(), experts.end()) ||
      *std::max_element(experts.begin(), experts.end()) > 256)
    throw UsageError("--top-k must lie in [1, the smallest of --experts] and --experts in [1, 256]");
  if ((*vm)["dense-epochs"].as<double>() <= 0 || (*vm)["epochs"].as<double>() <= 0) throw UsageError("--dense-epochs and --epochs must be positive");
  const fs::path out = (*vm)["out"].as<std::string>();
  const uint64_t seed = (*vm)["seed"].as<uint64_t>();
  const int64_t base_steps = (*vm)["base-steps"].as<int64_t>();
  if ((*vm)["base-samples"].as<int64_t>() < 1) throw UsageError("--base-samples must be positive");

  fs::create_directories(out);
  const fs::path test = out / "test.jsonl";
  synth_data(test, "test", (*vm)["test-samples"].as<int64_t>(), seed);
  const std::vector<HeldoutSet> heldout = synth_heldout_sets(out, (*vm)["test-samples"].as<int64_t>(), seed);
  const std::vector<Cell> cells = grid(sizes, repeats, methods, experts);
  std::vector<SweepRow> rows;
  Progress progress("sweep", cells.size(), "cells");
  for (const Cell& c : cells) {
    const uint64_t s = seed + uint64_t(c.repeat);
    const fs::path base = out / fmt::format("n{}-r{}", c.data, c.repeat);
    ExperimentOptions o;
    o.train = base / "train.jsonl";
    o.test = test;
    o.heldout = heldout;
    synth_data(o.train, "train", c.data, s);
    o.init = initial_model(*vm, out / fmt::format("init-r{}", c.repeat), s);
    o.dense_dir = base / "dense-run";
    o.out = c.method == "dense" ? base : base / fmt::format("e{}", c.experts);
    o.methods = {c.method};
    o.experts = c.experts;
    o.top_k = top_k;
    o.seed = s;
    set_experiment_tunings(*vm, {0, (*vm)["dense-epochs"].as<double>()}, {0, (*vm)["epochs"].as<double>()}, o);
    if (o.base_tune) {
      o.base_dir = out / fmt::format("base-r{}", c.repeat);
      o.base_train = out / fmt::format("base-r{}.jsonl", c.repeat);
      synth_data(o.base_train, "train", (*vm)["base-samples"].as<int64_t>(), s + 1000);
    }
    spdlog::info("sweep cell {}/{}: {} samples, repeat {}, {}{}", rows.size() + 1, cells.size(), c.data, c.repeat, c.method,
                 c.method == "dense" ? "" : fmt::format(" with {} experts", c.experts));
    rows.push_back({c.data, c.repeat, run_experiment(o).at(0)});
    progress.advance(1);
  }
  progress.finish();
  const std::string setup = fmt::format(
      "Grid: training data {} samples, methods {}, experts {}, {} repeat(s); {}the dense run {} epoch(s) saving {} "
      "checkpoints, each method {} epoch(s); top-{}; test set {} ({} samples); seed {}.",
      (*vm)["data"].as<std::string>(), (*vm)["methods"].as<std::string>(), (*vm)["experts"].as<std::string>(), repeats,
      base_steps > 0 ? fmt::format("a base tuning of {} steps per repeat on {} other samples, then ", base_steps,
                                   (*vm)["base-samples"].as<int64_t>())
                     : std::string(),
      (*vm)["dense-epochs"].as<double>(), (*vm)["checkpoints"].as<int64_t>(), (*vm)["epochs"].as<double>(),
      (*vm)["top-k"].as<int>(), test.string(), (*vm)["test-samples"].as<int64_t>(), seed);
  write_sweep_report(out, rows, setup);
  spdlog::info("sweep done: {}", (out / "report.md").string());
  return 0;
}

}  // namespace upcycle
