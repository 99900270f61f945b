#include "experiments/sweep.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "core/progress.hpp"
#include "experiments/methods.hpp"
#include "experiments/stages.hpp"
#include "report/sweep_report.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;
using O = SweepOptions;

// "2,4,8" -> {2, 4, 8}: positive integers.
std::vector<int64_t> int_list(const std::string& key, const std::string& text) {
  std::vector<int64_t> out;
  for (const std::string& item : comma_list(key, text)) {
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 1)
      throw OptionError(key, option_name(key) + ": '" + item + "' is not a positive integer");
    out.push_back(v);
  }
  return out;
}

template <class T>
std::string joined(const std::vector<T>& items) {
  return fmt::format("{}", fmt::join(items, ","));
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

OptionTable<O> make_table() {
  OptionTable<O> t = {
      text_option<O>("experts", "expert counts of the MoE methods", [](O& o) -> auto& { return o.experts; },
                     [](const std::string& v) { return int_list("experts", v); }, joined<int64_t>),
      text_option<O>("data", "training-data sizes (samples)", [](O& o) -> auto& { return o.data; },
                     [](const std::string& v) { return int_list("data", v); }, joined<int64_t>),
      text_option<O>("methods", "methods and ablations by name: " + experiment_method_names(), [](O& o) -> auto& { return o.methods; },
                     [](const std::string& v) { return experiment_method_list("methods", v); }, joined<std::string>),
      option<O>("repeats", "repeats of every cell with seeds seed, seed + 1, ...", [](O& o) -> auto& { return o.repeats; }),
      option<O>("out", "output folder", [](O& o) -> auto& { return o.out; }),
      option<O>("base_samples", "the base tuning's own synthetic data (other samples than the cells')",
                [](O& o) -> auto& { return o.base_samples; }),
      option<O>("dense_epochs", "epochs of the dense run", [](O& o) -> auto& { return o.dense_epochs; }),
      option<O>("epochs", "epochs of each method's tuning", [](O& o) -> auto& { return o.epochs; }),
  };
  add_settings_rows(t, [](O& o) -> auto& { return o.settings; });
  return t;
}

}  // namespace

const OptionTable<SweepOptions>& sweep_option_table() {
  static const OptionTable<SweepOptions> table = make_table();
  return table;
}

void check_sweep_options(const O& s) {
  check_experiment_settings(s.settings, s.methods);
  require_positive(s.repeats, "repeats");
  if (s.settings.top_k > *std::min_element(s.experts.begin(), s.experts.end()) ||
      *std::max_element(s.experts.begin(), s.experts.end()) > 256)
    throw OptionError("top_k", option_name("top_k") + " must lie in [1, the smallest of " + option_name("experts") + "] and " +
                                   option_name("experts") + " in [1, 256]");
  if (s.dense_epochs <= 0 || s.epochs <= 0)
    throw OptionError("epochs", option_name("dense_epochs") + " and " + option_name("epochs") + " must be positive");
  require_positive(double(s.base_samples), "base_samples");
}

void run_sweep(const O& s) {
  const fs::path& out = s.out;
  const uint64_t seed = s.settings.seed;
  const int64_t base_steps = s.settings.base_steps;
  fs::create_directories(out);
  const fs::path test = out / "test.jsonl";
  synth_data(test, "test", s.settings.test_samples, seed);
  const std::vector<HeldoutSet> heldout = synth_heldout_sets(out, s.settings.test_samples, seed);
  const std::vector<Cell> cells = grid(s.data, s.repeats, s.methods, s.experts);
  std::vector<RepeatRow> rows;
  Progress progress("sweep", cells.size(), "cells");
  for (const Cell& c : cells) {
    const uint64_t cell_seed = seed + uint64_t(c.repeat);
    const fs::path base = out / fmt::format("n{}-r{}", c.data, c.repeat);
    ExperimentOptions o;
    o.train = base / "train.jsonl";
    o.test = test;
    o.heldout = heldout;
    synth_data(o.train, "train", c.data, cell_seed);
    o.init = initial_model(s.settings, out / fmt::format("init-r{}", c.repeat), cell_seed);
    o.dense_dir = base / "dense-run";
    o.out = c.method == "dense" ? base : base / fmt::format("e{}", c.experts);
    o.methods = {c.method};
    o.experts = c.experts;
    o.top_k = s.settings.top_k;
    o.seed = cell_seed;
    o.base_seed = cell_seed;
    set_experiment_tunings(s.settings, {0, s.dense_epochs}, {0, s.epochs}, o);
    if (o.base_tune) {
      o.base_dir = out / fmt::format("base-r{}", c.repeat);
      o.base_train = out / fmt::format("base-r{}.jsonl", c.repeat);
      synth_data(o.base_train, "train", s.base_samples, cell_seed + 1000);
    }
    spdlog::info("sweep cell {}/{}: {} samples, repeat {}, {}{}", rows.size() + 1, cells.size(), c.data, c.repeat, c.method,
                 c.method == "dense" ? "" : fmt::format(" with {} experts", c.experts));
    rows.push_back({c.data, c.repeat, cell_seed, run_experiment(o).at(0)});
    progress.advance(1);
  }
  progress.finish();
  const std::string setup = fmt::format(
      "Grid: training data {} samples, methods {}, experts {}, {} repeat(s); {}the dense run {} epoch(s) saving {} "
      "checkpoints, each method {} epoch(s); top-{}; test set {} ({} samples); seed {}.",
      joined(s.data), joined(s.methods), joined(s.experts), s.repeats,
      base_steps > 0 ? fmt::format("a base tuning of {} steps per repeat on {} other samples, then ", base_steps,
                                   s.base_samples)
                     : std::string(),
      s.dense_epochs, s.settings.checkpoints, s.epochs, s.settings.top_k, test.string(), s.settings.test_samples, seed);
  write_sweep_report(out, rows, setup);
  spdlog::info("sweep done: {}", (out / "report.md").string());
}

}  // namespace upcycle
