#include "experiments/demo.hpp"

#include <chrono>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "core/progress.hpp"
#include "experiments/methods.hpp"
#include "experiments/stages.hpp"
#include "report/experiment_report.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;
using O = DemoOptions;

std::string setup_text(const ExperimentOptions& o, int64_t train, int64_t test, const fs::path& model, int repeats) {
  return fmt::format(
      "Model: {}{} tuned on {} synthetic instruction samples (`upcycle data synth`, {} test samples of the "
      "same families and phrasings) for {} steps, saving {} checkpoints; then each method tuned {} more steps "
      "on the same data: **dense** continues the dense model, **sparse** copies its final FFN into {} experts "
      "(random router), **upit** makes {} experts from the checkpoints by the genetic merge search and "
      "pre-optimises the routers on seed data. Top-{} routing, seed {}. Exact match is greedy decoding "
      "against the reference answer; the held-out columns ask the trained tasks in a phrasing never trained "
      "on, and task families never trained on. {} repeat(s) share the data and the base tuning (seed {}); repeat r "
      "has its own dense run and methods with seed {} + r (data order, the genetic search, router initialisation), "
      "the same for every method, so methods are compared in pairs. Methods: {}.{}",
      model.string(), !o.base_tune ? std::string() : fmt::format(" after a base tuning of {} steps", o.base_tune->steps),
      train, test, o.dense_tune.steps, o.dense_tune.save_count, o.tune.steps, o.experts, o.experts, o.top_k, o.base_seed, repeats, o.base_seed, o.base_seed,
      fmt::format("{}", fmt::join(o.methods, ", ")),
      o.dense_tune.lora.rank == 0
          ? ""
          : fmt::format(" LoRA experts: the dense run trains a rank-{} LoRA adapter on every module of the frozen model "
                        "and saves adapters; each MoE is a LoRA-MoE of them over that model (`convert --adapters`: an "
                        "expert is the FFN with its own terms, the attention terms shared), and every method tunes "
                        "adapters alone; **scratch** is LoRAMoE's start (new experts with B = 0, random routers).",
                        o.dense_tune.lora.rank));
}

OptionTable<O> make_table() {
  OptionTable<O> t = {
      option<O>("out", "output folder", [](O& o) -> auto& { return o.out; }),
      option<O>("experts", "experts of the MoEs", [](O& o) -> auto& { return o.experts; }),
      option<O>("train_samples", "synthetic training samples", [](O& o) -> auto& { return o.train_samples; }),
      option<O>("dense_steps", "steps of the dense run", [](O& o) -> auto& { return o.dense_steps; }),
      option<O>("steps", "steps of each method's tuning", [](O& o) -> auto& { return o.steps; }),
      text_option<O>("methods", "methods and ablations by name (see `upcycle sweep --help`)",
                     [](O& o) -> auto& { return o.methods; },
                     [](const std::string& v) { return experiment_method_list("methods", v); },
                     [](const std::vector<std::string>& v) { return fmt::format("{}", fmt::join(v, ",")); }),
      option<O>("repeats", "repeats with seeds seed, seed + 1, ... (each its own dense run and methods)",
                [](O& o) -> auto& { return o.repeats; }),
      option<O>("overwrite", "remove DIR first", [](O& o) -> auto& { return o.overwrite; }),
  };
  add_settings_rows(t, [](O& o) -> auto& { return o.settings; });
  return t;
}

}  // namespace

const OptionTable<DemoOptions>& demo_option_table() {
  static const OptionTable<DemoOptions> table = make_table();
  return table;
}

void check_demo_options(const O& o) {
  check_experiment_settings(o.settings, o.methods);
  if (o.dense_steps < o.settings.checkpoints)
    throw OptionError("dense_steps", option_name("dense_steps") + " must be at least " + option_name("checkpoints"));
  require_positive(double(o.steps), "steps");
  if (o.experts < 1 || o.experts > 256 || o.settings.top_k > o.experts)  // checked before hours of work, not after
    throw OptionError("experts", option_name("experts") + " must lie in [1, 256] and " + option_name("top_k") + " in [1, experts]");
  require_positive(double(o.train_samples), "train_samples");
  if (o.repeats < 1 || o.repeats > 100) throw OptionError("repeats", option_name("repeats") + " must lie in [1, 100]");
}

void run_demo(const O& d) {
  const fs::path& out = d.out;
  const uint64_t seed = d.settings.seed;
  const int64_t test = d.settings.test_samples;
  if (d.overwrite) fs::remove_all(out);
  fs::create_directories(out / "data");
  const auto start = std::chrono::steady_clock::now();

  // What the repeats share: the data, the starting model and its base tuning.
  ExperimentOptions o;
  o.train = out / "data" / "train.jsonl";
  o.test = out / "data" / "test.jsonl";
  synth_data(o.train, "train", d.train_samples, seed);
  synth_data(o.test, "test", test, seed);
  o.heldout = synth_heldout_sets(out / "data", test, seed);
  o.init = initial_model(d.settings, out / "init", seed);
  o.methods = d.methods;
  o.experts = d.experts;
  o.top_k = d.settings.top_k;
  o.base_seed = seed;
  set_experiment_tunings(d.settings, {d.dense_steps, 0}, {d.steps, 0}, o);
  if (o.base_tune) o.base_dir = out / "base";

  ExperimentReport report;
  report.title = "upcycle demo: UpIT against sparse upcycling and the dense model";
  report.base_dir = o.base_dir;
  Progress progress("demo", uint64_t(d.repeats), "repeats");
  for (int r = 0; r < d.repeats; ++r) {
    // Repeat r: its own dense run and methods, with seed + r for data order, the search and routers.
    o.seed = seed + uint64_t(r);
    o.out = out / fmt::format("r{}", r);
    o.dense_dir = o.out / "dense-run";
    spdlog::info("demo repeat {}/{} (seed {}): {}", r + 1, d.repeats, o.seed, o.out.string());
    for (MethodResult& m : run_experiment(o)) report.rows.push_back({d.train_samples, r, o.seed, std::move(m)});
    report.dense_seconds += recorded_seconds(o.dense_dir);
    if (r == 0) report.dense_dir = o.dense_dir;
    progress.advance(1);
  }
  progress.finish();
  if (!o.base_dir.empty()) report.base_seconds = recorded_seconds(o.base_dir);
  report.setup = setup_text(o, d.train_samples, test, o.init, d.repeats);
  write_experiment_report(out, report);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("demo done in {:.0f} s (this invocation): {}", seconds, (out / "report.md").string());
}

}  // namespace upcycle
