#include "experiments/sweep.hpp"

#include <algorithm>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "core/file_lock.hpp"
#include "core/progress.hpp"
#include "experiments/methods.hpp"
#include "experiments/stages.hpp"
#include "report/row_file.hpp"
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

// The folder of a data size and repeat: its data and dense run, shared by its cells.
fs::path size_folder(const O& s, const SweepCell& c) { return s.out / fmt::format("n{}-r{}", c.data, c.repeat); }

// The folder of a cell's method: results, models, evaluations and sweep_row.json.
fs::path cell_folder(const O& s, const SweepCell& c) {
  const fs::path base = size_folder(s, c);
  return (c.method == "dense" ? base : base / fmt::format("e{}", c.experts)) / c.method;
}

fs::path row_file(const O& s, const SweepCell& c) { return cell_folder(s, c) / "sweep_row.json"; }

fs::path test_data(const O& s) { return s.out / "test.jsonl"; }

// The experiment of one cell: its method on its data size, with its repeat's seed, initial model
// and base tuning; the shared data made here unless it exists.
ExperimentOptions cell_experiment(const O& s, const SweepCell& c) {
  const uint64_t seed = s.settings.seed + uint64_t(c.repeat);
  const fs::path base = size_folder(s, c);
  ExperimentOptions o;
  o.test = test_data(s);
  synth_data(o.test, "test", s.settings.test_samples, s.settings.seed);
  o.heldout = synth_heldout_sets(s.out, s.settings.test_samples, s.settings.seed);
  o.train = base / "train.jsonl";
  synth_data(o.train, "train", c.data, seed);
  o.init = initial_model(s.settings, s.out / fmt::format("init-r{}", c.repeat), seed);
  o.dense_dir = base / "dense-run";
  o.out = cell_folder(s, c).parent_path();
  o.methods = {c.method};
  o.experts = c.experts;
  o.top_k = s.settings.top_k;
  o.seed = seed;
  o.base_seed = seed;
  set_experiment_tunings(s.settings, {0, s.dense_epochs}, {0, s.epochs}, o);
  if (o.base_tune) {
    o.base_dir = s.out / fmt::format("base-r{}", c.repeat);
    o.base_train = s.out / fmt::format("base-r{}.jsonl", c.repeat);
    synth_data(o.base_train, "train", s.base_samples, seed + 1000);
  }
  return o;
}

// The report's first paragraph: the grid and its settings, and how much of it the report holds.
std::string setup_text(const O& s, const std::vector<SweepCell>& cells, const std::vector<size_t>& missing) {
  std::string missing_text;
  for (size_t i : missing) missing_text += fmt::format("{}cell {} ({})", missing_text.empty() ? "" : "; ", i, cell_name(cells[i]));
  return fmt::format(
      "Grid: training data {} samples, methods {}, experts {}, {} repeat(s); {}the dense run {} epoch(s) saving {} "
      "checkpoints, each method {} epoch(s); top-{}; test set {} ({} samples); seed {}. {}",
      joined(s.data), joined(s.methods), joined(s.experts), s.repeats,
      s.settings.base_steps > 0 ? fmt::format("a base tuning of {} steps per repeat on {} other samples, then ",
                                              s.settings.base_steps, s.base_samples)
                                : std::string(),
      s.dense_epochs, s.settings.checkpoints, s.epochs, s.settings.top_k, test_data(s).string(), s.settings.test_samples,
      s.settings.seed,
      missing.empty() ? fmt::format("All {} cells of the grid are in this report.", cells.size())
                      : fmt::format("{} of the grid's {} cells are in this report; missing (not finished): {}.",
                                    cells.size() - missing.size(), cells.size(), missing_text));
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

std::vector<SweepCell> sweep_cells(const O& s) {
  std::vector<SweepCell> grid;
  for (int64_t n : s.data)
    for (int r = 0; r < s.repeats; ++r)
      for (const std::string& m : s.methods) {
        if (m == "dense") grid.push_back({n, r, m, 1, grid.size()});
        else
          for (int64_t e : s.experts) grid.push_back({n, r, m, int(e), grid.size()});
      }
  // The first cell of each data size and repeat: its dense cell (no conversion: the quickest),
  // else its first.
  const bool dense = std::find(s.methods.begin(), s.methods.end(), "dense") != s.methods.end();
  auto first = [&](const SweepCell& c) {
    return dense ? c.method == "dense" : c.method == s.methods.front() && c.experts == s.experts.front();
  };
  std::stable_partition(grid.begin(), grid.end(), first);
  return grid;
}

size_t sweep_first_cells(const O& s) { return s.data.size() * size_t(s.repeats); }

std::string cell_name(const SweepCell& c) {
  return fmt::format("{} samples, repeat {}, {}{}", c.data, c.repeat, c.method,
                     c.method == "dense" ? "" : fmt::format(" with {} experts", c.experts));
}

void run_sweep_cell(const O& s, const SweepCell& c) {
  const fs::path row = row_file(s, c), folder = cell_folder(s, c);
  if (fs::exists(row)) {
    spdlog::info("cell {}: done, skipped ({})", cell_name(c), row.string());
    return;
  }
  fs::create_directories(folder.parent_path());
  const FileLock lock(lock_file_of(folder), "cell " + cell_name(c));
  if (fs::exists(row)) return;  // another process ran it while this one waited
  spdlog::info("running cell {} in {}", cell_name(c), folder.string());
  const ExperimentOptions o = cell_experiment(s, c);
  write_row_file(row, {c.data, c.repeat, o.seed, run_experiment(o).at(0)});
}

std::vector<size_t> report_sweep(const O& s) {
  const std::vector<SweepCell> cells = sweep_cells(s);
  std::vector<std::optional<RepeatRow>> by_row(cells.size());  // in sweep.csv's order
  std::vector<size_t> missing;
  for (size_t i = 0; i < cells.size(); ++i) {
    const fs::path row = row_file(s, cells[i]);
    if (fs::exists(row)) by_row[cells[i].row] = read_row_file(row);
    else missing.push_back(i);
  }
  if (missing.size() == cells.size())
    throw InputError(s.out, fmt::format("no cell of the grid's {} is done: nothing to report", cells.size()));
  std::vector<RepeatRow> rows;
  for (std::optional<RepeatRow>& row : by_row)
    if (row) rows.push_back(std::move(*row));
  write_sweep_report(s.out, rows, setup_text(s, cells, missing));
  return missing;
}

void run_sweep(const O& s) {
  const std::vector<SweepCell> cells = sweep_cells(s);
  Progress progress("sweep", cells.size(), "cells");
  for (size_t i = 0; i < cells.size(); ++i) {
    spdlog::info("sweep: cell {} of {} (--cell {})", i + 1, cells.size(), i);
    run_sweep_cell(s, cells[i]);
    progress.advance(1);
  }
  progress.finish();
  report_sweep(s);
  spdlog::info("sweep done: {}", (s.out / "report.md").string());
}

}  // namespace upcycle
