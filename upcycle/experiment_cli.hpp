// What `demo` and `sweep` share on their command lines: the options, their checks, and the
// stages' options made from them.
#pragma once
#include <filesystem>

#include "upcycle/cli.hpp"
#include "experiments/experiment.hpp"

namespace upcycle {

// --model, --top-k, --test-samples, --base-steps, --checkpoints, --lr, --tune-lr, --batch-tokens,
// --seed-samples, --seed.
void add_experiment_options(cli::po::options_description& options);

// UsageError for any of them out of range, before any work is done.
void check_experiment_options(const cli::po::variables_map& vm);

// --model, else a new model in `fresh` (made unless it exists) from the seed.
std::filesystem::path initial_model(const cli::po::variables_map& vm, const std::filesystem::path& fresh, uint64_t seed);

// o.base_tune (when --base-steps > 0: the caller sets o.base_dir), o.dense_tune (saving
// --checkpoints), o.tune and o.convert. The dense run and each method's tuning last
// dense_length and method_length.
void set_experiment_tunings(const cli::po::variables_map& vm, TuneLength dense_length, TuneLength method_length,
                            ExperimentOptions& o);

}  // namespace upcycle
