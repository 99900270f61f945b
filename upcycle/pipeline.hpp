// The pieces every pipeline is made of (`run`, `demo`, `sweep`): a stage is a subcommand run
// in-process with options from JSON, skipped when its result exists, resumed when it can be.
#pragma once
#include <filesystem>
#include <initializer_list>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "upcycle/commands.hpp"

namespace upcycle {

// A stage's options object as command-line arguments: {"save_every": 25, "keep_states": true}
// → --save-every 25 --keep-states. false and null leave an option out; arrays give several
// values. InputError naming `config` and `stage` for anything else.
Args to_args(const nlohmann::json& options, const std::filesystem::path& config, const std::string& stage);

// Copies the keys `stage` does not set from `from`.
void inherit(nlohmann::json& stage, const nlohmann::json& from, std::initializer_list<const char*> keys);

// Runs a subcommand as a stage: its usage errors name the stage.
void run_stage(const std::string& name, int (*command)(const Args&), const Args& args);

// A tune stage into dir: skipped when dir/final exists, resumed from the latest step with its
// optimizer state when one exists, else started afresh. False when it stopped early (stop_at).
bool tune_stage(nlohmann::json options, const std::filesystem::path& dir, const std::filesystem::path& config,
                const std::string& name);

// `data synth` into file (unless it exists): n samples of the split from the seed.
void synth_data(const std::filesystem::path& file, const std::string& split, int64_t n, uint64_t seed);

// `init --preset demo --tokenizer bytes` into dir (unless it exists): a model to train from scratch.
void init_demo_model(const std::filesystem::path& dir, uint64_t seed);

// A tuning run's checkpoints in step order, its final last.
std::vector<std::string> dense_checkpoints(const std::filesystem::path& dir);

}  // namespace upcycle
