#include "upcycle/experiment_cli.hpp"

#include "core/error.hpp"
#include "experiments/stages.hpp"

namespace upcycle {

void add_experiment_options(cli::po::options_description& options) {
  options.add_options()
      ("model", cli::po::value<std::string>(), "a dense model (with a tokenizer) to start from instead of a new one")
      ("top-k", cli::po::value<int>()->default_value(2), "experts per token")
      ("test-samples", cli::po::value<int64_t>()->default_value(240), "synthetic test samples (and of each held-out set)")
      ("base-steps", cli::po::value<int64_t>()->default_value(800), "steps of the base tuning (0: none)")
      ("checkpoints", cli::po::value<int64_t>()->default_value(4), "checkpoints the dense run saves (UpIT's K)")
      ("lr", cli::po::value<double>()->default_value(3e-3), "peak learning rate of the base tuning")
      ("tune-lr", cli::po::value<double>()->default_value(1e-3), "peak learning rate of the dense run and of each method")
      ("batch-tokens", cli::po::value<int64_t>()->default_value(2048), "tokens per step")
      ("seed-samples", cli::po::value<int64_t>()->default_value(100), "UpIT's seed set: at least this many training samples")
      ("seed", cli::po::value<uint64_t>()->default_value(0), "seed of the data, the models and every stage");
}

void check_experiment_options(const cli::po::variables_map& vm) {
  if (vm["top-k"].as<int>() < 1) throw UsageError("--top-k must be positive");
  if (vm["test-samples"].as<int64_t>() < 1) throw UsageError("--test-samples must be positive");
  if (vm["base-steps"].as<int64_t>() < 0) throw UsageError("--base-steps must not be negative");
  if (vm["checkpoints"].as<int64_t>() < 1) throw UsageError("--checkpoints must be positive");
  if (vm["batch-tokens"].as<int64_t>() < 1) throw UsageError("--batch-tokens must be positive");
  if (vm["seed-samples"].as<int64_t>() < 1) throw UsageError("--seed-samples must be positive");
}

std::filesystem::path initial_model(const cli::po::variables_map& vm, const std::filesystem::path& fresh, uint64_t seed) {
  if (vm.count("model")) return vm["model"].as<std::string>();
  init_demo_model(fresh, seed);
  return fresh;
}

void set_experiment_tunings(const cli::po::variables_map& vm, TuneLength dense_length, TuneLength method_length,
                            ExperimentOptions& o) {
  const int64_t batch = vm["batch-tokens"].as<int64_t>(), base_steps = vm["base-steps"].as<int64_t>();
  const double tune_lr = vm["tune-lr"].as<double>();
  if (base_steps > 0) o.base_tune = tune_options({base_steps, 0}, vm["lr"].as<double>(), base_steps / 10, batch);
  o.dense_tune = tune_options(dense_length, tune_lr, 10, batch);
  o.dense_tune.save_count = vm["checkpoints"].as<int64_t>();
  o.tune = tune_options(method_length, tune_lr, 10, batch);
  o.convert.seed_min = vm["seed-samples"].as<int64_t>();
}

}  // namespace upcycle
