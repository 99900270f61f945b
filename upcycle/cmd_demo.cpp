// `upcycle demo`: the whole UpIT pipeline from nothing, on data of our own: synthetic instruction
// tasks, a small dense model tuned from scratch with intermediate checkpoints, UpIT against sparse
// upcycling and the dense model at equal data and steps, and a report with plots.
#include <chrono>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "report/experiment_report.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"
#include "experiments/experiment.hpp"
#include "experiments/stages.hpp"
#include "upcycle/experiment_cli.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string setup_text(const ExperimentOptions& o, int64_t train, int64_t test, const fs::path& model) {
  return fmt::format(
      "Model: {}{} tuned on {} synthetic instruction samples (`upcycle data synth`, {} test samples of the "
      "same families and phrasings) for {} steps, saving {} checkpoints; then each method tuned {} more steps "
      "on the same data: **dense** continues the dense model, **sparse** copies its final FFN into {} experts "
      "(random router), **upit** makes {} experts from the checkpoints by the genetic merge search and "
      "pre-optimises the routers on seed data. Top-{} routing, seed {}. Exact match is greedy decoding "
      "against the reference answer; the held-out columns ask the trained tasks in a phrasing never trained "
      "on, and task families never trained on.",
      model.string(), !o.base_tune ? std::string() : fmt::format(" after a base tuning of {} steps", o.base_tune->steps),
      train, test, o.dense_tune.steps, o.dense_tune.save_count, o.tune.steps, o.experts, o.experts, o.top_k, o.seed);
}

}  // namespace

int cmd_demo(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle demo [--out DIR] [--model PATH] [options]";
  spec.summary =
      "Runs UpIT end to end on synthetic instruction data and compares it with sparse upcycling and\n"
      "the dense model at equal data and steps, into DIR (default runs/demo):\n"
      "  data/      train, test and held-out (phrasings, tasks) JSONL from `upcycle data synth`\n"
      "  init/      a new dense model (the `demo` preset, a byte tokenizer), or --model\n"
      "  base/      its first tuning (--base-steps), standing in for pretraining\n"
      "  dense-run/ the instruction tuning that saves the intermediate checkpoints UpIT merges\n"
      "  dense/ sparse/ upit/  each method's model (init/ for the MoEs), tuning (tuned/), evaluations\n"
      "  report.md, metrics.csv, plots/  the results table, in words, and plots\n"
      "Finished stages are skipped when run again, so an interrupted demo continues; --overwrite starts\n"
      "afresh. The defaults take about 10 minutes on two cores.";
  spec.options.add_options()
      ("out", cli::po::value<std::string>()->default_value("runs/demo"), "output folder")
      ("experts", cli::po::value<int>()->default_value(8), "experts of the MoEs")
      ("train-samples", cli::po::value<int64_t>()->default_value(4000), "synthetic training samples")
      ("dense-steps", cli::po::value<int64_t>()->default_value(400), "steps of the dense run")
      ("steps", cli::po::value<int64_t>()->default_value(500), "steps of each method's tuning")
      ("overwrite", "remove DIR first");
  add_experiment_options(spec.options);
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  check_experiment_options(*vm);
  const fs::path out = (*vm)["out"].as<std::string>();
  const uint64_t seed = (*vm)["seed"].as<uint64_t>();
  const int64_t dense_steps = (*vm)["dense-steps"].as<int64_t>(), steps = (*vm)["steps"].as<int64_t>();
  if (dense_steps < (*vm)["checkpoints"].as<int64_t>()) throw UsageError("--dense-steps must be at least --checkpoints");
  if (steps < 1) throw UsageError("--steps must be positive");
  const int experts = (*vm)["experts"].as<int>(), top_k = (*vm)["top-k"].as<int>();
  if (experts < 1 || experts > 256 || top_k > experts)  // checked before hours of work, not after
    throw UsageError("--experts must lie in [1, 256] and --top-k in [1, experts]");
  const int64_t train = (*vm)["train-samples"].as<int64_t>(), test = (*vm)["test-samples"].as<int64_t>();
  if (train < 1) throw UsageError("--train-samples must be positive");
  if (vm->count("overwrite")) fs::remove_all(out);
  fs::create_directories(out / "data");
  const auto start = std::chrono::steady_clock::now();

  ExperimentOptions o;
  o.train = out / "data" / "train.jsonl";
  o.test = out / "data" / "test.jsonl";
  synth_data(o.train, "train", train, seed);
  synth_data(o.test, "test", test, seed);
  o.heldout = synth_heldout_sets(out / "data", test, seed);
  o.init = initial_model(*vm, out / "init", seed);
  o.dense_dir = out / "dense-run";
  o.out = out;
  o.methods = {"dense", "sparse", "upit"};
  o.experts = experts;
  o.top_k = top_k;
  o.seed = seed;
  set_experiment_tunings(*vm, {dense_steps, 0}, {steps, 0}, o);
  if (o.base_tune) o.base_dir = out / "base";
  ExperimentReport report;
  report.title = "upcycle demo: UpIT against sparse upcycling and the dense model";
  report.results = run_experiment(o);
  report.dense_dir = o.dense_dir;
  report.base_dir = o.base_dir;
  if (!o.base_dir.empty()) report.base_seconds = recorded_seconds(o.base_dir);
  report.dense_seconds = recorded_seconds(o.dense_dir);
  report.setup = setup_text(o, train, test, o.init);
  write_experiment_report(out, report);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (const MethodResult& m : report.results)
    spdlog::info("{:>7}: eval loss {:.4f}, exact match {:.1f}%", m.method, m.loss, 100 * m.exact);
  spdlog::info("demo done in {:.0f} s (this invocation): {}", seconds, (out / "report.md").string());
  return 0;
}

}  // namespace upcycle
