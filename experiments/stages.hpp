// The pieces every pipeline is made of (`run`, `demo`, `sweep`): each stage a typed call,
// skipped when its result exists, resumed when it can be. The data and the initial model, which
// sweep cells run at once share, are made under a lock beside them (core/file_lock.hpp): one
// process makes each, the others wait and then find it made.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "trainer/train.hpp"

namespace upcycle {

// A tune stage into dir: skipped when dir/final exists, resumed from the latest step with its
// optimizer state when one exists, else started afresh. False when it stopped early (stop_at).
bool tune_stage(TrainOptions options, const std::filesystem::path& dir, const std::string& name);

// Synthetic data (data/synthetic_tasks.hpp) into file, unless it exists: n samples of the split.
void synth_data(const std::filesystem::path& file, const std::string& split, int64_t n, uint64_t seed);

// The demo preset with the byte-level tokenizer into dir, unless it exists: a model to train
// from scratch.
void init_demo_model(const std::filesystem::path& dir, uint64_t seed);

// A tuning run's checkpoints in step order, its final last.
std::vector<std::filesystem::path> dense_checkpoints(const std::filesystem::path& dir);

}  // namespace upcycle
